import Foundation
import Glibc
import Testing
import TestSupport
@testable import Link

@Suite struct PacketCaptureTests {
    func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tapstack-\(UUID()).pcap").path
    }

    @Test func recordedFramesReachTheFileInOrder() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let capture = PacketCapture(writer: try PcapWriter(path: path), flushEachFrame: false)
        capture.start()
        for frame in [Captured.arpRequest, Captured.echoRequest, Captured.udpRequest] {
            frame.withUnsafeBytes { capture.record($0) }
        }
        #expect(capture.stop())
        let reader = try PcapReader(path: path)
        var frames: [[UInt8]] = []
        while let frame = reader.next() { frames.append(frame.bytes) }
        #expect(frames == [Captured.arpRequest, Captured.echoRequest, Captured.udpRequest])
        #expect(capture.written.load(ordering: .relaxed) == 3)
    }

    @Test func filterKeepsOnlyMatchingFrames() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let capture = PacketCapture(writer: try PcapWriter(path: path, filter: "icmp"), flushEachFrame: true)
        capture.start()
        for frame in [Captured.arpRequest, Captured.echoRequest, Captured.udpRequest, Captured.echoReply] {
            frame.withUnsafeBytes { capture.record($0) }
        }
        capture.stop()
        let reader = try PcapReader(path: path)
        var frames: [[UInt8]] = []
        while let frame = reader.next() { frames.append(frame.bytes) }
        #expect(frames == [Captured.echoRequest, Captured.echoReply])
        #expect(capture.filtered.load(ordering: .relaxed) == 2)
    }

    @Test func badFilterIsAClearError() {
        #expect(throws: PcapWriter.Error.self) { try PcapWriter(path: "/dev/null", filter: "icmp and and") }
    }

    @Test func aFullRingDropsFromTheCaptureAndCountsIt() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Not started: nothing drains the ring, as when the writer is stuck.
        let capture = PacketCapture(writer: try PcapWriter(path: path), flushEachFrame: false, ringCapacity: 4)
        for _ in 0..<10 { Captured.echoRequest.withUnsafeBytes { capture.record($0) } }
        #expect(capture.offered.load(ordering: .relaxed) == 10)
        #expect(capture.droppedBehind.load(ordering: .relaxed) == 6)
    }

    @Test func snapLengthKeepsTheTrueLength() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let capture = PacketCapture(writer: try PcapWriter(path: path, snapLength: 60), flushEachFrame: false)
        capture.start()
        Captured.echoRequest.withUnsafeBytes { capture.record($0) }
        capture.stop()
        let frame = try #require(try PcapReader(path: path).next())
        #expect(frame.bytes == Array(Captured.echoRequest[0..<60]))
        #expect(frame.originalLength == Captured.echoRequest.count)
    }

    @Test func readerGivesNanosecondTimestamps() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try PcapWriter(path: path)
        Captured.arpRequest.withUnsafeBytes { _ = writer.write($0, originalLength: $0.count, seconds: 1_700_000_000, microseconds: 123_456) }
        writer.close()
        let frame = try #require(try PcapReader(path: path).next())
        #expect(frame.timestampNanoseconds == 1_700_000_000_123_456_000)
    }

    @Test func missingFileIsAClearError() {
        #expect(throws: PcapWriter.Error.self) { try PcapReader(path: "/nonexistent/in.pcap") }
    }
}
