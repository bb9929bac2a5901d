import SocketAPI
import Testing
@testable import Link

@Suite struct FrameRingTests {
    @Test func capacityRoundsUpToAPowerOfTwo() {
        #expect(FrameRing(capacity: 5, slotSize: 16).capacity == 8)
        #expect(FrameRing(capacity: 8, slotSize: 16).capacity == 8)
    }

    @Test func framesComeOutInOrderWithTheirLengths() {
        let ring = FrameRing(capacity: 4, slotSize: 16)
        #expect(ring.peek() == nil)
        for n in 1...3 { #expect([UInt8](repeating: UInt8(n), count: n).withUnsafeBytes { ring.push($0) }) }
        #expect(ring.count == 3)
        for n in 1...3 { #expect(ring.pop() == [UInt8](repeating: UInt8(n), count: n)) }
        #expect(ring.pop() == nil)
        #expect(ring.isEmpty)
    }

    @Test func aFullRingRefusesAndRecoversAfterARelease() {
        let ring = FrameRing(capacity: 2, slotSize: 4)
        #expect([UInt8(1)].withUnsafeBytes { ring.push($0) })
        #expect([UInt8(2)].withUnsafeBytes { ring.push($0) })
        #expect(ring.isFull)
        #expect(ring.reserve() == nil)
        #expect(![UInt8(3)].withUnsafeBytes { ring.push($0) })
        #expect(ring.pop() == [1])
        #expect([UInt8(4)].withUnsafeBytes { ring.push($0) })
        #expect(ring.pop() == [2])
        #expect(ring.pop() == [4])
    }

    @Test func slotsAheadAreFilledAndReadBeforeBeingPublishedOrReleased() {
        let ring = FrameRing(capacity: 4, slotSize: 8)
        #expect([UInt8(9)].withUnsafeBytes { ring.push($0) })
        // Three slots are free: the producer may fill the next three, not a fourth.
        for offset in 0..<3 { ring.reserve(ahead: offset)!.storeBytes(of: UInt8(offset), as: UInt8.self) }
        #expect(ring.reserve(ahead: 3) == nil)
        #expect(ring.count == 1)
        for _ in 0..<3 { ring.commit(length: 1) }
        #expect(ring.count == 4)
        // The consumer sees all four in order before releasing any.
        #expect((0..<4).map { ring.peek(ahead: $0)!.first! } == [9, 0, 1, 2])
        #expect(ring.peek(ahead: 4) == nil)
        ring.release()
        #expect(ring.peek(ahead: 2)!.first == 2)
        #expect(ring.peek(ahead: 3) == nil)
    }

    @Test func oversizedFrameIsRefused() {
        let ring = FrameRing(capacity: 2, slotSize: 4)
        #expect(![UInt8](repeating: 0, count: 5).withUnsafeBytes { ring.push($0) })
        #expect(ring.isEmpty)
    }

    /// An emptied ring starts again at its first slot (positions only grow);
    /// a ring holding a frame, or already there, is left alone.
    @Test func anEmptiedRingRewindsToItsFirstSlot() {
        let ring = FrameRing(capacity: 8, slotSize: 16, headroom: 4)
        let first = ring.reserve()!.baseAddress!
        #expect(ring.rewindIfEmpty() == nil)  // already at slot 0
        for n in 1...3 { #expect([UInt8](repeating: UInt8(n), count: n).withUnsafeBytes { ring.push($0) }) }
        #expect(ring.rewindIfEmpty() == nil)  // holds frames
        for n in 1...3 { #expect(ring.pop() == [UInt8](repeating: UInt8(n), count: n)) }
        #expect(ring.rewindIfEmpty() == 8)
        #expect(ring.produced == 8 && ring.consumed == 8 && ring.isEmpty && ring.freeSlots == 8)
        #expect(ring.reserve()!.baseAddress! == first)
        #expect([UInt8](repeating: 9, count: 5).withUnsafeBytes { ring.push($0) })
        #expect(ring.pop() == [UInt8](repeating: 9, count: 5))
        #expect(ring.rewindIfEmpty() == 16)
    }

    @Test func indicesWrapAroundManyTimes() {
        let ring = FrameRing(capacity: 4, slotSize: 8)
        for i in 0..<10_000 {
            withUnsafeBytes(of: UInt64(i)) { #expect(ring.push($0)) }
            let frame = ring.peek()!
            #expect(frame.loadUnaligned(as: UInt64.self) == UInt64(i))
            ring.release()
        }
    }

    /// Two threads, one producing and one consuming, a million frames of
    /// varying length: each must arrive once, in order, intact.
    @Test func twoThreadStressDeliversEveryFrameOnceInOrder() {
        let ring = FrameRing(capacity: 64, slotSize: 64)
        let total = 1_000_000
        let producer = JoinableThread(name: "ring-producer") {
            var i = 0
            while i < total {
                guard let slot = ring.reserve() else { continue }
                let length = 8 + i % 50
                slot.storeBytes(of: UInt64(i), as: UInt64.self)
                for j in 8..<length { slot[j] = UInt8(truncatingIfNeeded: i &+ j) }
                ring.commit(length: length)
                i += 1
            }
        }
        var expected = 0
        var corrupt = 0
        while expected < total {
            guard let frame = ring.peek() else { continue }
            let sequence = Int(frame.loadUnaligned(as: UInt64.self))
            if sequence != expected || frame.count != 8 + expected % 50 { corrupt += 1 }
            for j in 8..<frame.count where frame[j] != UInt8(truncatingIfNeeded: sequence &+ j) { corrupt += 1 }
            ring.release()
            expected += 1
        }
        producer.join()
        #expect(corrupt == 0)
        #expect(ring.isEmpty)
    }

    /// Publishing into a full ring (a commit with no slot reserved) traps
    /// instead of overwriting a frame the consumer has not read.
    @Test func committingToAFullRingTrapsInsteadOfOverwriting() async {
        await #expect(processExitsWith: .failure) {
            let ring = FrameRing(capacity: 2, slotSize: 16)
            #expect(ring.push(UnsafeRawBufferPointer(start: nil, count: 0)))
            #expect(ring.push(UnsafeRawBufferPointer(start: nil, count: 0)))
            ring.commit(length: 1)
        }
        // The same calls without the extra commit are fine.
        let ring = FrameRing(capacity: 2, slotSize: 16)
        ring.commit(length: 1)
        #expect(ring.count == 1)
    }

    /// A frame longer than its slot traps too.
    @Test func committingMoreThanASlotHoldsTraps() async {
        await #expect(processExitsWith: .failure) {
            FrameRing(capacity: 2, slotSize: 16).commit(length: 17)
        }
    }
}
