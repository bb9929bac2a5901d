import Testing
import TestSupport
@testable import Stack
@testable import Wire

@Suite struct IPv4InputTests {
    /// The captured echo request with one header byte changed and the checksum fixed.
    func echoRequest(patch offset: Int, _ value: UInt8, fixChecksum: Bool = true) -> [UInt8] {
        var frame = Captured.echoRequest
        frame[14 + offset] = value
        if fixChecksum {
            frame[24] = 0
            frame[25] = 0
            let sum = frame.withUnsafeBytes { InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: $0[14..<34])) }
            frame[24] = UInt8(sum >> 8)
            frame[25] = UInt8(sum & 0xFF)
        }
        return frame
    }

    @Test func frameForAnotherMACIsDropped() {
        let h = Harness()
        var frame = Captured.echoRequest
        frame[5] = 0x03
        h.receive(frame)
        #expect(h.sent().isEmpty)
        #expect(h.counter(.ethernetDropNotForUs) == 1)
    }

    @Test func runtFrameIsDropped() {
        let h = Harness()
        h.receive([0x02, 0x00])
        #expect(h.counter(.ethernetDropTruncated) == 1)
    }

    @Test func unknownEtherTypeIsDropped() {
        let h = Harness()
        // 0x88B5: IEEE 802's local experimental EtherType, which nobody speaks.
        h.receive(FrameBuilder.ethernet(type: EtherType(rawValue: 0x88B5), payload: [UInt8](repeating: 0, count: 40)))
        #expect(h.counter(.ethernetDropUnknownEtherType) == 1)
        // IPv6 is parsed now: an all-zero packet is a bad version, not an unknown type.
        h.receive(FrameBuilder.ethernet(type: .ipv6, payload: [UInt8](repeating: 0, count: 40)))
        #expect(h.counter(.ethernetDropUnknownEtherType) == 1 && h.counter(.ipv6DropBadVersion) == 1)
    }

    @Test func badHeaderChecksumIsDropped() {
        let h = Harness()
        h.learnPeer()
        h.receive(echoRequest(patch: 8, 63, fixChecksum: false))
        #expect(h.sent().isEmpty)
        #expect(h.counter(.ipv4DropBadChecksum) == 1)
    }

    @Test func badVersionIsDropped() {
        let h = Harness()
        h.receive(echoRequest(patch: 0, 0x65))
        #expect(h.counter(.ipv4DropBadVersion) == 1)
    }

    @Test(arguments: [UInt8(0x40), 0x44])
    func headerLengthBelowFiveWordsIsDropped(_ versionIHL: UInt8) {
        let h = Harness()
        h.receive(echoRequest(patch: 0, versionIHL))
        #expect(h.counter(.ipv4DropBadHeaderLength) == 1)
    }

    @Test func totalLengthBeyondFrameIsDropped() {
        let h = Harness()
        h.receive(echoRequest(patch: 2, 0x05))  // total length 0x0554
        #expect(h.counter(.ipv4DropTruncated) == 1)
    }

    @Test func totalLengthBelowHeaderIsDropped() {
        let h = Harness()
        var frame = echoRequest(patch: 2, 0)
        frame = echoRequest(patch: 3, 10)
        frame[16] = 0
        frame[24] = 0; frame[25] = 0
        let sum = frame.withUnsafeBytes { InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: $0[14..<34])) }
        frame[24] = UInt8(sum >> 8); frame[25] = UInt8(sum & 0xFF)
        h.receive(frame)
        #expect(h.counter(.ipv4DropBadLength) == 1)
    }

    @Test func packetForAnotherAddressIsNotForwarded() {
        let h = Harness()
        h.learnPeer()
        h.receive(FrameBuilder.echoRequestFrame(payload: [1, 2, 3], destination: IPv4Address(192, 0, 2, 77)))
        #expect(h.sent().isEmpty)
        #expect(h.counter(.ipv4DropNotForUs) == 1)
    }

    @Test(arguments: [IPv4Address.broadcast, IPv4Address(224, 0, 0, 5), IPv4Address(127, 0, 0, 1),
                      IPv4Address(192, 0, 2, 2), IPv4Address(192, 0, 2, 255), IPv4Address(240, 0, 0, 1)])
    func martianSourceIsDropped(_ source: IPv4Address) {
        let h = Harness()
        h.receive(FrameBuilder.udpFrame(destinationPort: 7, payload: [1], source: source))
        #expect(h.counter(.ipv4DropBadSource) == 1)
    }

    @Test func unknownProtocolIsDropped() {
        let h = Harness()
        h.receive(FrameBuilder.ethernet(type: .ipv4, payload: FrameBuilder.ipv4(proto: IPProtocol(rawValue: 200), payload: [1, 2])))
        #expect(h.counter(.ipv4DropUnknownProtocol) == 1)
    }

    @Test func ethernetPaddingDoesNotReachUDP() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        h.receive(Captured.udpRequest + [UInt8](repeating: 0xEE, count: 12))
        #expect(try h.stack.receive(from: endpoint).payload == Array("hello\n".utf8))
    }
}
