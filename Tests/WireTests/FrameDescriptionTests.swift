import Testing
import TestSupport
@testable import Wire

@Suite struct FrameDescriptionTests {
    func describe(_ frame: [UInt8]) -> String { frame.withUnsafeBytes { FrameDescription.describe($0) } }

    @Test func linesReadLikeTcpdump() {
        #expect(describe(Captured.arpRequest) == "ARP, Request who-has 192.0.2.2 tell 192.0.2.1, length 28")
        #expect(describe(Captured.arpReply) == "ARP, Reply 192.0.2.2 is-at 02:00:00:00:00:02, length 46")
        #expect(describe(Captured.echoRequest) == "IP 192.0.2.1 > 192.0.2.2: ICMP echo request, id 5727, seq 1, length 64")
        #expect(describe(Captured.udpRequest) == "IP 192.0.2.1.35789 > 192.0.2.2.7: UDP, length 6")
    }

    @Test func badChecksumsAreFlagged() {
        var frame = Captured.udpRequest
        frame[47] ^= 1
        #expect(describe(frame).hasSuffix("[bad udp cksum]"))
        frame = Captured.echoRequest
        frame[24] ^= 1
        #expect(describe(frame).contains("[bad ip cksum]"))
    }

    @Test func malformedInputIsDescribedNotTrapped() {
        #expect(describe([1, 2, 3]) == "runt frame, length 3")
        #expect(describe(Array(Captured.echoRequest[0..<20])).hasPrefix("IP, malformed"))
        #expect(describe(Array(Captured.arpRequest[0..<16])).hasPrefix("ARP, truncated"))
    }
}
