import Testing
import TestSupport
@testable import Wire

@Suite struct EthernetTests {
    @Test func parsesCapturedFrame() throws {
        try Captured.arpRequest.withUnsafeBytes { bytes in
            let frame = try EthernetFrameView(bytes)
            #expect(frame.destination == .broadcast)
            #expect(frame.source == MACAddress(Captured.kernelMAC))
            #expect(frame.etherType == .arp)
            #expect(frame.payload.count == 28)
        }
    }

    @Test func emitsHeaderByteForByte() {
        var bytes = [UInt8](repeating: 0, count: 14)
        bytes.withUnsafeMutableBytes {
            EthernetHeader(destination: MACAddress(Captured.kernelMAC)!, source: MACAddress("02:00:00:00:00:02")!,
                           etherType: .arp).emit(into: $0)
        }
        #expect(bytes == Array(Captured.arpReply[0..<14]))
    }

    @Test func headerRoundTrips() throws {
        let header = EthernetHeader(destination: MACAddress("01:02:03:04:05:06")!, source: MACAddress("0a:0b:0c:0d:0e:0f")!,
                                    etherType: EtherType(rawValue: 0x88B5))
        var bytes = [UInt8](repeating: 0, count: 14)
        bytes.withUnsafeMutableBytes { header.emit(into: $0) }
        let parsed = try bytes.withUnsafeBytes { try EthernetHeader(EthernetFrameView($0)) }
        #expect(parsed == header)
    }

    @Test func shorterThanHeaderIsTruncated() {
        for length in 0..<14 {
            let bytes = Array(Captured.arpRequest[0..<length])
            #expect(throws: WireError.truncated) { try bytes.withUnsafeBytes { _ = try EthernetFrameView($0) } }
        }
    }
}
