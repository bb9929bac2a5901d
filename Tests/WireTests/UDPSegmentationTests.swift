import Testing
import TestSupport
@testable import Wire

/// Cutting a GSO frame the kernel hands over into its datagrams.
@Suite struct UDPSegmentationTests {
    /// An IPv6 GSO frame as the kernel's USO6 hands it over: one IPv6 and UDP
    /// header for the whole payload, each segment to become a datagram of its own.
    @Test func anIPv6SegmentationFrameIsCutIntoTheDatagramsItStandsFor() {
        let payloads = [[UInt8](repeating: 1, count: 64), [UInt8](repeating: 2, count: 64), [UInt8](repeating: 3, count: 20)]
        var whole = FrameBuilder.udp6Frame(sourcePort: 4000, destinationPort: 7, payload: payloads.flatMap { $0 })
        whole[60] = 0xAB; whole[61] = 0xCD  // the kernel leaves a partial checksum: never trusted here
        let segments: [[UInt8]] = whole.withUnsafeBytes { bytes in
            let count = UDPSegmentation.segmentCount(of: bytes, segmentSize: 64) ?? 0
            return (0..<count).map { index in
                var out = [UInt8](repeating: 0, count: 1514)
                let n = out.withUnsafeMutableBytes { UDPSegmentation.writeSegment(index, of: bytes, segmentSize: 64, into: $0)! }
                return Array(out[0..<n])
            }
        }
        #expect(segments == payloads.map { FrameBuilder.udp6Frame(sourcePort: 4000, destinationPort: 7, payload: $0) })
        // Anything but UDP right after the IPv6 header is not cut.
        let options = FrameBuilder.ipv6Frame(next: IPv6NextHeader.destinationOptions, payload: [17, 0, 1, 4, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 100))
        #expect(options.withUnsafeBytes { UDPSegmentation.segmentCount(of: $0, segmentSize: 64) } == nil)
    }
}
