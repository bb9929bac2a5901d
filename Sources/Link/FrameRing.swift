import Synchronization

/// A lock-free single-producer, single-consumer ring of fixed-size frame slots.
///
/// The ring is also the packet-buffer pool: the producer writes a frame
/// straight into the next free slot (`reserve`, then `commit`), and the
/// consumer reads it in place (`peek`, then `release`). Nothing is allocated
/// after `init`.
///
/// Synchronisation (why `@unchecked Sendable` is sound): exactly one thread
/// may act as producer and one as consumer at any moment. `tail` is written
/// only by the producer and `head` only by the consumer; each publishes with a
/// release store that the other side reads with an acquire load, so a slot's
/// bytes are visible before its index is. A role may move between threads only
/// through some other happens-before edge (for example a lock held by whoever
/// produces).
public final class FrameRing: @unchecked Sendable {
    /// Number of slots; a power of two.
    public let capacity: Int
    /// Bytes per slot: the largest frame the ring carries.
    public let slotSize: Int

    private let mask: Int
    private let storage: UnsafeMutableRawPointer
    private let lengths: UnsafeMutablePointer<Int>
    /// Next slot the consumer reads. Written by the consumer only.
    private let head = Atomic<Int>(0)
    /// Next slot the producer writes. Written by the producer only.
    private let tail = Atomic<Int>(0)
    /// Set by a producer that found the ring full and wants to hear when it drains.
    private let producerWaiting = Atomic<Bool>(false)

    /// Creates a ring of `capacity` slots (rounded up to a power of two) of `slotSize` bytes.
    public init(capacity: Int, slotSize: Int) {
        precondition(capacity > 0 && slotSize > 0)
        var size = 1
        while size < capacity { size <<= 1 }
        self.capacity = size
        self.slotSize = slotSize
        mask = size - 1
        storage = UnsafeMutableRawPointer.allocate(byteCount: size * slotSize, alignment: 64)
        lengths = UnsafeMutablePointer<Int>.allocate(capacity: size)
        lengths.initialize(repeating: 0, count: size)
    }

    deinit {
        storage.deallocate()
        lengths.deallocate()
    }

    // MARK: Producer side

    /// The next free slot, `slotSize` bytes long, or nil when the ring is full.
    /// Producer only. Call `commit` to publish what was written.
    @inline(__always)
    public func reserve() -> UnsafeMutableRawBufferPointer? {
        let t = tail.load(ordering: .relaxed)
        guard t &- head.load(ordering: .acquiring) < capacity else { return nil }
        return UnsafeMutableRawBufferPointer(start: storage + (t & mask) * slotSize, count: slotSize)
    }

    /// The free slot `offset` places after the one `reserve` returns, or nil
    /// when fewer than `offset + 1` slots are free; for filling several slots
    /// before publishing them in order with `commit`. Producer only.
    @inline(__always)
    public func reserve(ahead offset: Int) -> UnsafeMutableRawBufferPointer? {
        let t = tail.load(ordering: .relaxed) &+ offset
        guard t &- head.load(ordering: .acquiring) < capacity else { return nil }
        return UnsafeMutableRawBufferPointer(start: storage + (t & mask) * slotSize, count: slotSize)
    }

    /// Publishes the slot returned by the last `reserve` holding `length` bytes.
    /// Producer only.
    @inline(__always)
    public func commit(length: Int) {
        precondition(length >= 0 && length <= slotSize)
        let t = tail.load(ordering: .relaxed)
        lengths[t & mask] = length
        // Sequentially consistent so that a consumer about to sleep either
        // sees this frame or is seen sleeping by the producer (see Wakeup).
        tail.store(t &+ 1, ordering: .sequentiallyConsistent)
    }

    /// Copies `frame` into the next slot and publishes it; false when full or too long.
    /// Producer only.
    @discardableResult
    public func push(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard frame.count <= slotSize, let slot = reserve() else { return false }
        if let base = frame.baseAddress { slot.baseAddress!.copyMemory(from: base, byteCount: frame.count) }
        commit(length: frame.count)
        return true
    }

    /// Slots free for the producer now. Producer side.
    public var freeSlots: Int {
        capacity - (tail.load(ordering: .relaxed) &- head.load(ordering: .sequentiallyConsistent))
    }

    /// True when `count` slots are free. If not, records that the producer
    /// waits (the consumer's `takeProducerWaiting` then reports it) and looks
    /// again, so a slot freed in between is not missed. Producer side.
    public func hasRoom(for count: Int) -> Bool {
        if freeSlots >= count { return true }
        producerWaiting.store(true, ordering: .sequentiallyConsistent)
        return freeSlots >= count
    }

    /// True (once) when a producer found the ring full since the last call.
    /// Consumer side, after `release`.
    public func takeProducerWaiting() -> Bool {
        producerWaiting.load(ordering: .sequentiallyConsistent)
            && producerWaiting.exchange(false, ordering: .sequentiallyConsistent)
    }

    /// True when no slot is free. Producer side.
    public var isFull: Bool { tail.load(ordering: .relaxed) &- head.load(ordering: .acquiring) >= capacity }

    // MARK: Consumer side

    /// The oldest published frame, or nil when empty. Consumer only. The bytes
    /// stay valid until `release`.
    @inline(__always)
    public func peek() -> UnsafeRawBufferPointer? {
        let h = head.load(ordering: .relaxed)
        guard h != tail.load(ordering: .sequentiallyConsistent) else { return nil }
        return UnsafeRawBufferPointer(start: storage + (h & mask) * slotSize, count: lengths[h & mask])
    }

    /// The published frame `offset` places after the one `peek` returns, or
    /// nil when there are not that many; for handling several frames before
    /// releasing them in order. Consumer only.
    @inline(__always)
    public func peek(ahead offset: Int) -> UnsafeRawBufferPointer? {
        let h = head.load(ordering: .relaxed) &+ offset
        guard tail.load(ordering: .sequentiallyConsistent) &- h > 0 else { return nil }
        return UnsafeRawBufferPointer(start: storage + (h & mask) * slotSize, count: lengths[h & mask])
    }

    /// Frees the slot returned by the last `peek`. Consumer only.
    @inline(__always)
    public func release() {
        let h = head.load(ordering: .relaxed)
        head.store(h &+ 1, ordering: .sequentiallyConsistent)
    }

    /// Copies out and releases the oldest frame. Consumer only; for tests and cold paths.
    public func pop() -> [UInt8]? {
        guard let frame = peek() else { return nil }
        let copy = Array(frame)
        release()
        return copy
    }

    /// True when nothing is published. Safe from either side (a snapshot).
    public var isEmpty: Bool { head.load(ordering: .sequentiallyConsistent) == tail.load(ordering: .sequentiallyConsistent) }

    /// Frames published and not yet released (a snapshot).
    public var count: Int { tail.load(ordering: .sequentiallyConsistent) &- head.load(ordering: .sequentiallyConsistent) }
}
