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

    @Test func ipv6LinesReadLikeTcpdump() {
        #expect(describe(FrameBuilder.udp6Frame(sourcePort: 35789, destinationPort: 7, payload: [1, 2]))
                == "IP6 fe80::bc5e:63ff:fe13:bd1b.35789 > fe80::ff:fe00:2.7: UDP, length 2")
        #expect(describe(FrameBuilder.neighborSolicitation())
                == "IP6 fe80::bc5e:63ff:fe13:bd1b > ff02::1:ff00:2: ICMP6, neighbor solicitation, length 32")
        // A later fragment: its offset and size; a cut-short header chain: said so, never a trap.
        let fragment = FrameBuilder.ipv6Frame(next: IPv6NextHeader.fragment, payload: [17, 0, 0x05, 0xA9, 0, 0, 0, 9] + [UInt8](repeating: 0, count: 16))
        #expect(describe(fragment) == "IP6 fe80::bc5e:63ff:fe13:bd1b > fe80::ff:fe00:2: frag (1448|16) [+], id 9")
        #expect(describe(FrameBuilder.ipv6Frame(next: IPv6NextHeader.destinationOptions, payload: [17]))
                == "IP6 fe80::bc5e:63ff:fe13:bd1b > fe80::ff:fe00:2: extension headers cut short, length 1")
        #expect(describe(Array(FrameBuilder.neighborSolicitation()[0..<30])).hasPrefix("IP6, malformed"))
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
