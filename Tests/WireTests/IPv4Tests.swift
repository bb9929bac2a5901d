import Testing
import TestSupport
@testable import Wire

@Suite struct IPv4Tests {
    @Test func parsesCapturedEchoRequestHeader() throws {
        let header = try Array(Captured.echoRequest[14...]).withUnsafeBytes { try IPv4Header(IPv4PacketView($0)) }
        #expect(header == IPv4Header(payloadLength: 64, identification: 0xB686, dontFragment: true, ttl: 64,
                                     proto: .icmp, source: IPv4Address(192, 0, 2, 1), destination: IPv4Address(192, 0, 2, 2)))
    }

    @Test func emitsCapturedReplyHeaderByteForByte() {
        var bytes = [UInt8](repeating: 0, count: 20)
        bytes.withUnsafeMutableBytes {
            IPv4Header(payloadLength: 64, identification: 1, proto: .icmp,
                       source: IPv4Address(192, 0, 2, 2), destination: IPv4Address(192, 0, 2, 1)).emit(into: $0)
        }
        #expect(bytes == Array(Captured.echoReply[14..<34]))
    }

    @Test func ethernetPaddingIsExcludedFromThePacket() throws {
        try Array(Captured.udpReply[14...]).withUnsafeBytes { bytes in
            #expect(bytes.count == 46)
            let packet = try IPv4PacketView(bytes)
            #expect(packet.totalLength == 34)
            #expect(packet.payload.count == 14)
        }
    }

    @Test func badChecksumIsRejected() {
        var bytes = Array(Captured.echoRequest[14...])
        bytes[10] ^= 0x01
        #expect(throws: WireError.badChecksum) { try bytes.withUnsafeBytes { _ = try IPv4Header(IPv4PacketView($0)) } }
    }

    @Test func versionOtherThanFourIsRejected() {
        var bytes = Array(Captured.echoRequest[14...])
        bytes[0] = 0x65
        #expect(throws: WireError.badVersion) { try bytes.withUnsafeBytes { _ = try IPv4PacketView($0) } }
    }

    @Test(arguments: [UInt8(0x40), 0x41, 0x44])
    func headerLengthBelowFiveWordsIsRejected(_ versionIHL: UInt8) {
        var bytes = Array(Captured.echoRequest[14...])
        bytes[0] = versionIHL
        #expect(throws: WireError.badHeaderLength) { try bytes.withUnsafeBytes { _ = try IPv4PacketView($0) } }
    }

    @Test func headerLengthBeyondTheBufferIsTruncated() {
        var bytes = Array(Captured.echoRequest[14..<38])  // 24 bytes
        bytes[0] = 0x47  // 28-byte header
        #expect(throws: WireError.truncated) { try bytes.withUnsafeBytes { _ = try IPv4PacketView($0) } }
    }

    @Test func totalLengthBeyondTheBufferIsTruncated() {
        let bytes = Array(Captured.echoRequest[14..<60])
        #expect(throws: WireError.truncated) { try bytes.withUnsafeBytes { _ = try IPv4PacketView($0) } }
    }

    @Test func totalLengthSmallerThanTheHeaderIsBadLength() {
        var bytes = Array(Captured.echoRequest[14...])
        bytes[2] = 0
        bytes[3] = 19
        #expect(throws: WireError.badLength) { try bytes.withUnsafeBytes { _ = try IPv4PacketView($0) } }
    }

    @Test func optionsAreSkipped() throws {
        // The captured UDP request with a 4-byte option (NOP NOP NOP EOL) inserted.
        var bytes = Array(Captured.udpRequest[14..<34]) + [1, 1, 1, 0] + Array(Captured.udpRequest[34...])
        bytes[0] = 0x46
        bytes[3] += 4
        bytes[10] = 0
        bytes[11] = 0
        let checksum = bytes.withUnsafeBytes { InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: $0[0..<24])) }
        bytes[10] = UInt8(checksum >> 8)
        bytes[11] = UInt8(checksum & 0xFF)
        try bytes.withUnsafeBytes { raw in
            let packet = try IPv4PacketView(raw)
            #expect(packet.headerLength == 24)
            #expect(Array(packet.payload) == Array(Captured.udpRequest[34...]))
            #expect(try IPv4Header(packet).payloadLength == 14)
        }
    }

    @Test func fragmentFieldsRoundTrip() throws {
        let header = IPv4Header(payloadLength: 1480, identification: 0x1234, moreFragments: true, fragmentOffset: 2960,
                                ttl: 7, proto: .udp, source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2))
        var bytes = [UInt8](repeating: 0, count: 1500)
        bytes.withUnsafeMutableBytes { header.emit(into: $0) }
        try bytes.withUnsafeBytes { raw in
            let view = try IPv4PacketView(raw)
            #expect(view.isFragment && view.moreFragments && !view.dontFragment)
            #expect(view.fragmentOffset == 2960)
            #expect(try IPv4Header(view) == header)
        }
    }
}
