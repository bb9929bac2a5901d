import Testing
import TestSupport
@testable import Wire

@Suite struct ICMPv4Tests {
    @Test func parsesCapturedEchoRequest() throws {
        try Array(Captured.echoRequest[34...]).withUnsafeBytes { bytes in
            let message = try ICMPv4MessageView(bytes)
            #expect(message.type == ICMPv4Type.echoRequest)
            #expect(message.identifier == 0x165F)
            #expect(message.sequenceNumber == 1)
            #expect(message.payload.count == 56)
            #expect(try ICMPv4Header(message) == .echo(request: true, identifier: 0x165F, sequenceNumber: 1))
        }
    }

    @Test func emitsCapturedEchoReplyByteForByte() {
        var message = Array(Captured.echoRequest[34...])
        message.withUnsafeMutableBytes {
            ICMPv4Header.echo(request: false, identifier: 0x165F, sequenceNumber: 1).emit(intoMessage: $0)
        }
        #expect(message == Array(Captured.echoReply[34...]))
    }

    @Test func badChecksumIsRejected() {
        var message = Array(Captured.echoRequest[34...])
        message[40] ^= 0xFF
        #expect(throws: WireError.badChecksum) { try message.withUnsafeBytes { _ = try ICMPv4Header(ICMPv4MessageView($0)) } }
    }

    @Test func shorterThanHeaderIsTruncated() {
        for length in 0..<8 {
            #expect(throws: WireError.truncated) {
                try Array(Captured.echoRequest[34..<(34 + length)]).withUnsafeBytes { _ = try ICMPv4MessageView($0) }
            }
        }
    }

    @Test func errorTypesAreRecognised() {
        #expect(ICMPv4Type.isError(3) && ICMPv4Type.isError(11) && ICMPv4Type.isError(12))
        #expect(!ICMPv4Type.isError(0) && !ICMPv4Type.isError(8))
    }
}
