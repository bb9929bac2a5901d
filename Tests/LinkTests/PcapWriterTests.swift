import CPcap
import Foundation
import Testing
import TestSupport
@testable import Link

@Suite struct PcapWriterTests {
    /// Reads every frame of a pcap file back with libpcap.
    func readFrames(_ path: String) throws -> (linkType: Int32, frames: [(bytes: [UInt8], seconds: Int, micros: Int)]) {
        var error = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        let handle = try #require(pcap_open_offline(path, &error))
        defer { pcap_close(handle) }
        var frames: [(bytes: [UInt8], seconds: Int, micros: Int)] = []
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        while pcap_next_ex(handle, &header, &data) == 1 {
            let h = header!.pointee
            frames.append((Array(UnsafeBufferPointer(start: data, count: Int(h.caplen))), h.ts.tv_sec, h.ts.tv_usec))
        }
        return (pcap_datalink(handle), frames)
    }

    @Test func framesAreReadBackByLibpcapByteForByte() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tapstack-\(UUID()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try PcapWriter(path: path)
        Captured.arpRequest.withUnsafeBytes { _ = writer.write($0, originalLength: $0.count, seconds: 1_700_000_000, microseconds: 42) }
        Captured.echoReply.withUnsafeBytes { _ = writer.write($0, originalLength: $0.count, seconds: 1_700_000_001, microseconds: 999_999) }
        writer.close()
        let (linkType, frames) = try readFrames(path)
        #expect(linkType == DLT_EN10MB)
        #expect(frames.count == 2)
        #expect(frames[0].bytes == Captured.arpRequest && frames[0].seconds == 1_700_000_000 && frames[0].micros == 42)
        #expect(frames[1].bytes == Captured.echoReply && frames[1].micros == 999_999)
    }

    @Test func snapLengthCutsFramesButKeepsTheirLength() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tapstack-\(UUID()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try PcapWriter(path: path, snapLength: 20)
        Captured.echoReply.withUnsafeBytes { writer.write($0) }
        writer.close()
        let frames = try readFrames(path).frames
        #expect(frames.first?.bytes == Array(Captured.echoReply[0..<20]))
    }

    @Test func unwritablePathGivesAClearError() {
        #expect(throws: PcapWriter.Error.self) { try PcapWriter(path: "/nonexistent-dir/x.pcap") }
    }
}
