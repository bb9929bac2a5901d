import CTapstackChannel
import Glibc
import SocketAPI
import Testing
import TestSupport

/// The shared-memory SPSC ring (issue 18): records in order across the
/// wrap, bounds, and a consumer that a hostile producer cannot make read
/// outside the ring.
@Suite struct SharedRingTests {
    /// A region holding one ring, with its producer and consumer ends.
    final class Ring {
        let capacity: UInt32
        let memory: UnsafeMutableRawPointer
        var producer = tsr_end()
        var consumer = tsr_end()

        init(capacity: UInt32 = 256) {
            self.capacity = capacity
            let size = tsr_ring_size(capacity)
            memory = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
            memory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
            precondition(tsr_attach(&producer, memory, capacity, 1) == 0 && tsr_attach(&consumer, memory, capacity, 0) == 0)
        }

        deinit { memory.deallocate() }

        /// 0, or the errno of a failed push; `wasEmpty` as the push said.
        func push(_ bytes: [UInt8]) -> (error: Int32, wasEmpty: Bool) {
            var empty: Int32 = 0
            let result = bytes.withUnsafeBytes { raw -> Int32 in
                var part = iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
                return tsr_push(&producer, &part, 1, &empty)
            }
            return (result == 0 ? 0 : errno, empty != 0)
        }

        /// The record's full length and the bytes that fit `size`; nil when empty; -1 length on EBADMSG.
        func pop(size: Int = 4096, peek: Bool = false) -> (length: Int, bytes: [UInt8])? {
            var out = [UInt8](repeating: 0, count: size)
            let n = out.withUnsafeMutableBytes { tsr_pop(&consumer, $0.baseAddress, size, peek ? 1 : 0) }
            if n == 0 { return nil }
            if n < 0 { return (-1, []) }
            return (n, Array(out[0..<min(n, size)]))
        }

        var shared: UnsafeMutablePointer<tsr_shared> { memory.assumingMemoryBound(to: tsr_shared.self) }
        var data: UnsafeMutableRawPointer { memory + MemoryLayout<tsr_shared>.size }
    }

    @Test func recordsComeOutInOrderAcrossTheWrap() {
        let ring = Ring()
        var expected: [[UInt8]] = []
        for round in 0..<50 {
            let record = [UInt8](repeating: UInt8(round), count: 1 + (round * 7) % 90)
            #expect(ring.push(record).error == 0)
            expected.append(record)
            if round % 2 == 1 {
                for _ in 0..<2 { #expect(ring.pop()?.bytes == expected.removeFirst()) }
            }
        }
        #expect(ring.pop() == nil)
        #expect(ring.shared.pointee.tail > ring.capacity, "the ring wrapped")
    }

    @Test func boundsAreKeptAndSaidSo() {
        let ring = Ring()
        #expect(ring.push([UInt8](repeating: 1, count: 121)).error == EMSGSIZE)  // over half the ring, less the header
        #expect(ring.push([]).error == EMSGSIZE)
        #expect(ring.push([UInt8](repeating: 1, count: 100)).wasEmpty)
        #expect(!ring.push([UInt8](repeating: 2, count: 100)).wasEmpty)
        #expect(ring.push([UInt8](repeating: 3, count: 100)).error == EAGAIN)
        // Peek leaves it; a short buffer gets the start and the full length.
        #expect(ring.pop(size: 10, peek: true)?.length == 100)
        let cut = ring.pop(size: 10)
        #expect(cut?.length == 100 && cut?.bytes == [UInt8](repeating: 1, count: 10))
        #expect(ring.push([UInt8](repeating: 3, count: 100)).error == 0)
    }

    @Test func aHostileProducerCannotMakeTheConsumerReadOutsideTheRing() {
        // An impossible tail: more than the ring holds.
        var ring = Ring()
        ring.shared.pointee.tail = ring.capacity + 8
        #expect(ring.pop()?.length == -1)
        #expect(ring.pop()?.length == -1, "a broken ring stays broken")
        // A record longer than what was published.
        ring = Ring()
        #expect(ring.push([1, 2, 3]).error == 0)
        ring.data.storeBytes(of: UInt32(200), as: UInt32.self)
        #expect(ring.pop()?.length == -1)
        // A wrap marker with nothing behind it.
        ring = Ring()
        ring.data.storeBytes(of: UInt32.max, as: UInt32.self)
        ring.shared.pointee.tail = 8
        #expect(ring.pop()?.length == -1)
        // Random scribbling over indices and records: never out of bounds (ASan in CI), lengths within the ring.
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            ring = Ring(capacity: 128)
            for offset in 0..<128 { ring.data.storeBytes(of: UInt8.random(in: 0...255, using: &generator), toByteOffset: offset, as: UInt8.self) }
            ring.shared.pointee.tail = UInt32.random(in: 0...300, using: &generator) & ~7
            while let record = ring.pop(size: 256), record.length > 0 { #expect(record.length <= 128) }
        }
    }

    @Test func twoThreadsMoveManyRecordsInOrder() {
        let ring = Ring(capacity: 4096)
        let count = 100_000
        final class Box: @unchecked Sendable { let ring: Ring; init(_ ring: Ring) { self.ring = ring } }
        let box = Box(ring)
        let producer = JoinableThread(name: "ring-producer") {
            var sent = 0
            while sent < count {
                var record = withUnsafeBytes(of: UInt32(sent).littleEndian) { Array($0) }
                record += [UInt8](repeating: UInt8(truncatingIfNeeded: sent), count: sent % 200)
                if box.ring.push(record).error == 0 { sent += 1 } else { sched_yield() }
            }
        }
        var received = 0
        var wrong = 0
        let deadline = ContinuousClock.now + .seconds(30)
        while received < count && ContinuousClock.now < deadline {
            guard let record = ring.pop(size: 512) else { sched_yield(); continue }
            let sequence = record.bytes[0..<4].withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
            if sequence != received || record.length != 4 + received % 200 { wrong += 1 }
            received += 1
        }
        producer.join()
        #expect(received == count && wrong == 0)
    }
}
