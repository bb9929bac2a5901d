import Testing
import TestSupport
@testable import Wire

@Suite struct UDPTests {
    let kernel = IPv4Address(192, 0, 2, 1)
    let stack = IPv4Address(192, 0, 2, 2)

    @Test func parsesCapturedDatagram() throws {
        try Array(Captured.udpRequest[34...]).withUnsafeBytes { bytes in
            let datagram = try UDPDatagramView(bytes)
            #expect(datagram.sourcePort == 35789)
            #expect(datagram.destinationPort == 7)
            #expect(Array(datagram.payload) == Array("hello\n".utf8))
            #expect(try UDPHeader(datagram, source: kernel, destination: stack) ==
                    UDPHeader(sourcePort: 35789, destinationPort: 7, payloadLength: 6))
        }
    }

    @Test func emitsCapturedReplyByteForByte() {
        var datagram = [UInt8](repeating: 0, count: 8) + Array("hello\n".utf8)
        datagram.withUnsafeMutableBytes {
            UDPHeader(sourcePort: 7, destinationPort: 35789, payloadLength: 6).emit(intoDatagram: $0, source: stack, destination: kernel)
        }
        #expect(datagram == Array(Captured.udpReply[34..<48]))
    }

    @Test func checksumCoversThePseudoHeader() {
        let bytes = Array(Captured.udpRequest[34...])
        #expect(throws: WireError.badChecksum) {
            try bytes.withUnsafeBytes { _ = try UDPHeader(UDPDatagramView($0), source: kernel, destination: IPv4Address(192, 0, 2, 3)) }
        }
    }

    @Test func zeroChecksumMeansNone() throws {
        var bytes = Array(Captured.udpRequest[34...])
        bytes[6] = 0
        bytes[7] = 0
        bytes[12] ^= 0xFF  // corrupt the payload: unchecked, so still accepted
        _ = try bytes.withUnsafeBytes { try UDPHeader(UDPDatagramView($0), source: kernel, destination: stack) }
    }

    @Test func computedZeroChecksumIsSentAsAllOnes() throws {
        // Pick the last payload word so the datagram's checksum computes to 0.
        var datagram = [UInt8](repeating: 0, count: 8) + [0x12, 0x34, 0, 0]
        datagram.withUnsafeMutableBytes {
            UDPHeader(sourcePort: 1000, destinationPort: 2000, payloadLength: 4).emit(intoDatagram: $0, source: stack, destination: kernel)
        }
        let first = UInt16(datagram[6]) << 8 | UInt16(datagram[7])
        // Adding the old checksum value as data makes the new sum 0xFFFF, so the checksum is 0.
        datagram[10] = UInt8(first >> 8)
        datagram[11] = UInt8(first & 0xFF)
        datagram.withUnsafeMutableBytes {
            UDPHeader(sourcePort: 1000, destinationPort: 2000, payloadLength: 4).emit(intoDatagram: $0, source: stack, destination: kernel)
        }
        #expect(datagram[6] == 0xFF && datagram[7] == 0xFF)
        _ = try datagram.withUnsafeBytes { try UDPHeader(UDPDatagramView($0), source: stack, destination: kernel) }
    }

    @Test func lengthFieldBelowHeaderIsBadLength() {
        var bytes = Array(Captured.udpRequest[34...])
        bytes[5] = 7
        #expect(throws: WireError.badLength) { try bytes.withUnsafeBytes { _ = try UDPDatagramView($0) } }
    }

    @Test func lengthFieldBeyondTheBufferIsTruncated() {
        var bytes = Array(Captured.udpRequest[34...])
        bytes[5] = 15
        #expect(throws: WireError.truncated) { try bytes.withUnsafeBytes { _ = try UDPDatagramView($0) } }
    }

    @Test func bytesBeyondTheLengthFieldAreIgnored() throws {
        let bytes = Array(Captured.udpRequest[34...]) + [0, 0, 0, 0]
        try bytes.withUnsafeBytes { raw in
            let datagram = try UDPDatagramView(raw)
            #expect(datagram.length == 14)
            #expect(datagram.checksumIsValid(source: kernel, destination: stack))
        }
    }
}
