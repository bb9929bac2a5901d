import Testing
import TestSupport
@testable import Stack
@testable import Wire

@Suite struct ICMPTests {
    @Test func echoRequestIsAnsweredByteForByte() {
        let h = Harness()
        h.receive(Captured.arpRequest)
        _ = h.sent()
        h.receive(Captured.echoRequest)
        #expect(h.sent() == [Captured.echoReply])
        #expect(h.counter(.icmpTxEchoReplies) == 1)
    }

    @Test(arguments: [0, 1, 56, 1472])
    func echoReplyCarriesThePayloadUnchanged(_ size: Int) throws {
        let h = Harness()
        h.learnPeer()
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 * 7) }
        h.receive(FrameBuilder.echoRequestFrame(identifier: 0xBEEF, sequence: 9, payload: payload))
        let frames = h.sent()
        try #require(frames.count == 1)
        try frames[0].withUnsafeBytes { bytes in
            let ip = try IPv4PacketView(EthernetFrameView(bytes).payload)
            #expect(ip.source == FrameBuilder.stackIP && ip.destination == FrameBuilder.peerIP)
            let icmp = try ICMPv4MessageView(ip.payload)
            #expect(icmp.type == ICMPv4Type.echoReply && icmp.code == 0)
            #expect(icmp.identifier == 0xBEEF && icmp.sequenceNumber == 9)
            #expect(icmp.checksumIsValid)
            #expect(Array(icmp.payload) == payload)
        }
    }

    @Test func echoToBroadcastIsIgnored() {
        let h = Harness()
        h.learnPeer()
        h.receive(FrameBuilder.echoRequestFrame(payload: [1], destination: IPv4Address(192, 0, 2, 255)))
        #expect(h.sent().isEmpty)
        #expect(h.counter(.icmpDropBroadcastEcho) == 1)
    }

    @Test func badICMPChecksumIsDropped() {
        let h = Harness()
        h.learnPeer()
        var frame = Captured.echoRequest
        frame[60] ^= 0x55
        h.receive(frame)
        #expect(h.sent().isEmpty)
        #expect(h.counter(.icmpDropBadChecksum) == 1)
    }

    @Test func truncatedICMPIsDropped() {
        let h = Harness()
        h.receive(FrameBuilder.ethernet(type: .ipv4, payload: FrameBuilder.ipv4(proto: .icmp, payload: [8, 0, 0])))
        #expect(h.counter(.icmpDropTruncated) == 1)
    }

    @Test func echoToUnresolvedPeerIsParkedUntilARPAnswers() {
        let h = Harness()
        h.receive(FrameBuilder.echoRequestFrame(payload: [1, 2, 3]))
        let first = h.sent()
        #expect(first.count == 1 && first[0][12] == 0x08 && first[0][13] == 0x06)  // an ARP request
        h.receive(FrameBuilder.arp(.reply, targetMAC: FrameBuilder.stackMAC, destination: FrameBuilder.stackMAC))
        let second = h.sent()
        #expect(second.count == 1 && second[0][34] == ICMPv4Type.echoReply)
    }

    @Test func fullLinkDropsTheReplyAndCountsIt() {
        let h = Harness()
        h.learnPeer()
        h.sink.limit = 0
        h.receive(Captured.echoRequest)
        #expect(h.counter(.ethernetTxDropLinkFull) == 1)
        #expect(h.counter(.icmpTxEchoReplies) == 0)
    }
}
