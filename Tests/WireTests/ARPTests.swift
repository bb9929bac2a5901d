import Testing
import TestSupport
@testable import Wire

@Suite struct ARPTests {
    @Test func parsesCapturedRequest() throws {
        let packet = try Array(Captured.arpRequest[14...]).withUnsafeBytes { try ARPPacket(ARPPacketView($0)) }
        #expect(packet == ARPPacket(operation: .request, senderMAC: MACAddress(Captured.kernelMAC)!,
                                    senderIP: IPv4Address(192, 0, 2, 1), targetMAC: .zero,
                                    targetIP: IPv4Address(192, 0, 2, 2)))
    }

    @Test func emitsCapturedReplyByteForByte() {
        var bytes = [UInt8](repeating: 0, count: 28)
        bytes.withUnsafeMutableBytes {
            ARPPacket(operation: .reply, senderMAC: MACAddress("02:00:00:00:00:02")!, senderIP: IPv4Address(192, 0, 2, 2),
                      targetMAC: MACAddress(Captured.kernelMAC)!, targetIP: IPv4Address(192, 0, 2, 1)).emit(into: $0)
        }
        #expect(bytes == Array(Captured.arpReply[14..<42]))
    }

    @Test func truncatedAtEveryLengthThrows() {
        let full = Array(Captured.arpRequest[14...])
        for length in 0..<28 {
            #expect(throws: WireError.truncated) { try Array(full[0..<length]).withUnsafeBytes { _ = try ARPPacketView($0) } }
        }
    }

    @Test func addressLengthsBeyondTheBufferAreTruncated() {
        var bytes = Array(Captured.arpRequest[14...])
        bytes[4] = 200  // hardware length 200: the addresses cannot fit
        #expect(throws: WireError.truncated) { try bytes.withUnsafeBytes { _ = try ARPPacketView($0) } }
    }

    @Test(arguments: [(0, UInt8(0x00), UInt8(0x06)), (2, 0x86, 0xDD), (4, 0x08, 0x04)])
    func otherHardwareOrProtocolIsUnsupported(offset: Int, high: UInt8, low: UInt8) {
        var bytes = Array(Captured.arpRequest[14...]) + [UInt8](repeating: 0, count: 40)
        bytes[offset] = high
        bytes[offset + 1] = low
        #expect(throws: WireError.unsupported) { try bytes.withUnsafeBytes { _ = try ARPPacket(ARPPacketView($0)) } }
    }

    @Test func unknownOperationIsUnsupported() {
        var bytes = Array(Captured.arpRequest[14...])
        bytes[7] = 9
        #expect(throws: WireError.unsupported) { try bytes.withUnsafeBytes { _ = try ARPPacket(ARPPacketView($0)) } }
    }
}
