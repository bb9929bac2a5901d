import Glibc
import Link
import SocketAPI
import Testing
import TestSupport
@testable import Sockets
@testable import Stack
@testable import Wire

/// The batch calls: many datagrams per hold of the stack, same semantics as one at a time.
@Suite(.serialized) struct BatchTests {
    @Test func aSendBatchStopsWhereTheLinkIsFullAndSaysSo() throws {
        let live = LiveHost(ringCapacity: 8) { $0.transmitReserveFrames = 0 }
        live.learnPeer()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        let payloads = (0..<12).map { [UInt8](repeating: UInt8($0), count: 10 + $0) }
        let storage = payloads.flatMap { $0 }
        var offered = 0, offset = 0
        var failures: [SocketError] = []
        let result = storage.withUnsafeBytes { bytes in
            socket.send(batch: {
                guard offered < payloads.count else { return nil }
                let range = offset..<(offset + payloads[offered].count)
                offset = range.upperBound
                offered += 1
                return (UnsafeRawBufferPointer(rebasing: bytes[range]), SocketAddress(FrameBuilder.peerIP, 9000))
            }, failed: { failures.append($0) })
        }
        // Eight slots: eight sent in order, the ninth refused and reported, none lost.
        #expect(result.taken == 8)
        #expect(result.blocked)
        #expect(failures.isEmpty)
        for index in 0..<8 {
            let frame = try #require(live.link.nextTransmitted())
            #expect(Array(frame[42..<(42 + payloads[index].count)]) == payloads[index])
        }
    }

    @Test func aSendBatchReportsPerDatagramErrorsAndGoesOn() throws {
        let live = LiveHost()
        live.learnPeer()
        let socket = UDPSocket(host: live.host)
        let destinations = [SocketAddress(FrameBuilder.peerIP, 9000), SocketAddress(IPv4Address(10, 0, 0, 1), 9),
                            SocketAddress(FrameBuilder.peerIP, 9001)]
        var offered = 0
        var failures: [SocketError] = []
        let payload: [UInt8] = [1, 2, 3]
        let result = payload.withUnsafeBytes { bytes in
            socket.send(batch: {
                guard offered < destinations.count else { return nil }
                defer { offered += 1 }
                return (bytes, destinations[offered])
            }, failed: { failures.append($0) })
        }
        #expect(result.taken == 3 && !result.blocked)
        #expect(failures == [.networkUnreachable])
        #expect(live.link.nextTransmitted() != nil)
        #expect(live.link.nextTransmitted() != nil)
    }

    @Test func aReceiveBatchTakesWhatIsQueuedInOrder() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        for index in 0..<5 {
            #expect(live.link.inject(FrameBuilder.udpFrame(sourcePort: 4000 + UInt16(index), destinationPort: 7, payload: [UInt8(index)])))
        }
        let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 * 64, alignment: 8)
        defer { buffers.deallocate() }
        var seen: [(Int, Int, SocketAddress)] = []
        #expect(live.host.waitUntilIdle(), "the five frames were handled")
        let count = try socket.receive(upTo: 4, into: { UnsafeMutableRawBufferPointer(rebasing: buffers[($0 * 64)..<($0 * 64 + 64)]) },
                                       received: { seen.append(($0, $1, $2)) })
        // At most four at once; the fifth is left for the next call.
        #expect(count == 4)
        let rest = try socket.receive(upTo: 4, into: { UnsafeMutableRawBufferPointer(rebasing: buffers[($0 * 64)..<($0 * 64 + 64)]) },
                                      received: { seen.append(($0 + count, $1, $2)) })
        #expect(count + rest == 5)
        #expect(seen.map { $0.2.port } == [4000, 4001, 4002, 4003, 4004])
        #expect(seen.allSatisfy { $0.1 == 1 })
        #expect(try socket.receive(upTo: 4, into: { _ in buffers }, received: { _, _, _ in }) == 0)
    }

    /// A batch lends queued datagrams in place: one kept (the closure says
    /// so) is lent again by the next call; sends in the same hold go out.
    @Test func aBatchLendsDatagramsInPlaceAndKeepsWhatIsNotTaken() throws {
        let live = LiveHost()
        live.learnPeer()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        for index in 0..<3 { live.link.inject(FrameBuilder.udpFrame(sourcePort: 4000 + UInt16(index), destinationPort: 7, payload: [UInt8(index), 9])) }
        #expect(live.host.waitUntilIdle())
        var lent: [([UInt8], UInt16)] = []
        let result = socket.withBatch { batch -> Result<Void, SocketError> in
            do throws(SocketError) {
                // The first is kept, so it is lent again; then taken and echoed.
                try batch.receive { bytes, source in lent.append((Array(bytes), source.port)); return false }
                for _ in 0..<3 {
                    try batch.receive { bytes, source in
                        lent.append((Array(bytes), source.port))
                        try? batch.send(bytes, to: source)
                        return true
                    }
                }
                try batch.receive { _, _ in true }
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        #expect(throws: SocketError.wouldBlock) { try result.get() }
        #expect(lent.map(\.0) == [[0, 9], [0, 9], [1, 9], [2, 9]])
        #expect(lent.map(\.1) == [4000, 4000, 4001, 4002])
        for index in 0..<3 {
            let frame = try #require(live.link.nextTransmitted())
            #expect(Array(frame[36..<38]) == [0x0F, 0xA0 + UInt8(index)] && Array(frame[42..<44]) == [UInt8(index), 9])
        }
    }
}
