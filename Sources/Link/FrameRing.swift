import Synchronization
import Wire

/// A frame in a ring slot, with what the link knows or asks about it.
public struct RingFrame {
    /// The frame's bytes (valid until the slot is released).
    public var bytes: UnsafeRawBufferPointer
    /// Its transport checksum: completed by the link (received) or to be
    /// completed by it (sent).
    public var checksum: ChecksumOffload
    /// For a received frame that carries several UDP datagrams of one flow
    /// (a GSO frame from the kernel): the payload bytes per datagram; 0 otherwise.
    public var segmentSize: Int
}

/// A lock-free single-producer, single-consumer ring of fixed-size frame slots.
///
/// The ring is also the packet-buffer pool: the producer writes a frame
/// straight into the next free slot (`reserve`, then `commit`), and the
/// consumer reads it in place (`peek`, then `release`). Nothing is allocated
/// after `init`. Each slot has `headroom` bytes before its frame for the
/// device side (a TAP device's virtio-net header), so a frame and its header
/// go to or come from the device in one piece; `slotStart(at:)` gives a slot
/// with its headroom, and the storage can be lent to the kernel as its
/// receive buffers (`storage`, `stride`).
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
    /// Bytes a frame may have.
    public let slotSize: Int
    /// Bytes before each frame for the device side.
    public let headroom: Int
    /// Bytes from one slot's start to the next (headroom + slot size, rounded up to 64).
    public let stride: Int
    /// The slots' memory: buffer `i` starts at `storage + i * stride`.
    public let storage: UnsafeMutableRawPointer

    private let mask: Int
    private let lengths: UnsafeMutablePointer<Int32>
    private let checksums: UnsafeMutablePointer<ChecksumOffload>
    private let segmentSizes: UnsafeMutablePointer<UInt16>
    /// Which buffer of `storage` each position's slot uses: its own
    /// (`position & mask`) unless the producer assigned another.
    private let buffers: UnsafeMutablePointer<UInt32>
    /// Next slot the consumer reads. Written by the consumer only.
    private let head = Atomic<Int>(0)
    /// Next slot the producer writes. Written by the producer only.
    private let tail = Atomic<Int>(0)
    /// Set by a producer that found the ring full and wants to hear when it drains.
    private let producerWaiting = Atomic<Bool>(false)

    /// Creates a ring of `capacity` slots (rounded up to a power of two) for
    /// frames of up to `slotSize` bytes, each with `headroom` bytes before it.
    public init(capacity: Int, slotSize: Int, headroom: Int = 0) {
        precondition(capacity > 0 && slotSize > 0 && headroom >= 0)
        var size = 1
        while size < capacity { size <<= 1 }
        self.capacity = size
        self.slotSize = slotSize
        self.headroom = headroom
        stride = (headroom + slotSize + 63) & ~63
        mask = size - 1
        storage = UnsafeMutableRawPointer.allocate(byteCount: size * stride, alignment: 4096)
        lengths = .allocate(capacity: size)
        lengths.initialize(repeating: 0, count: size)
        checksums = .allocate(capacity: size)
        checksums.initialize(repeating: .none, count: size)
        segmentSizes = .allocate(capacity: size)
        segmentSizes.initialize(repeating: 0, count: size)
        buffers = .allocate(capacity: size)
        for index in 0..<size { (buffers + index).initialize(to: UInt32(index)) }
    }

    deinit {
        storage.deallocate()
        lengths.deallocate()
        checksums.deallocate()
        segmentSizes.deallocate()
        buffers.deallocate()
    }

    /// The start of the slot at ring position `position` (as counted by
    /// `produced`/`consumed`), headroom included.
    @inline(__always)
    public func slotStart(at position: Int) -> UnsafeMutableRawPointer {
        storage + Int(buffers[position & mask]) * stride
    }

    /// The buffer (of `capacity`, in `storage`) the slot at `position` uses.
    @inline(__always)
    public func buffer(at position: Int) -> Int { Int(buffers[position & mask]) }

    /// Has the slot at `position` (not yet published) use `buffer`, for a
    /// producer that hands out buffers itself: a link that keeps reusing the
    /// few it freed last, still in the cache, when the kernel fills buffers
    /// in an order of its own. The producer keeps every buffer in one slot
    /// at most. Producer only.
    @inline(__always)
    public func assign(buffer: Int, to position: Int) {
        precondition(buffer >= 0 && buffer < capacity, "buffer \(buffer) of \(capacity)")
        buffers[position & mask] = UInt32(buffer)
    }

    @inline(__always)
    private func frameArea(at position: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: slotStart(at: position) + headroom, count: slotSize)
    }

    /// Frames published so far (the producer's position). Producer side, or a snapshot.
    public var produced: Int { tail.load(ordering: .acquiring) }
    /// Frames released so far (the consumer's position). Consumer side, or a snapshot.
    public var consumed: Int { head.load(ordering: .acquiring) }

    // MARK: Producer side

    /// The next free slot's frame area, `slotSize` bytes long, or nil when
    /// the ring is full. Producer only. Call `commit` to publish what was written.
    @inline(__always)
    public func reserve() -> UnsafeMutableRawBufferPointer? { reserve(ahead: 0) }

    /// The free slot `offset` places after the one `reserve` returns, or nil
    /// when fewer than `offset + 1` slots are free; for filling several slots
    /// before publishing them in order with `commit`. Producer only.
    @inline(__always)
    public func reserve(ahead offset: Int) -> UnsafeMutableRawBufferPointer? {
        let t = tail.load(ordering: .relaxed) &+ offset
        guard t &- head.load(ordering: .acquiring) < capacity else { return nil }
        return frameArea(at: t)
    }

    /// Publishes the next slot holding a frame of `length` bytes at its frame
    /// area, with what is known of its checksum. Producer only; the ring must
    /// have a free slot (one `reserve` returned), or this traps rather than
    /// overwrite a frame not yet read.
    @inline(__always)
    public func commit(length: Int, checksum: ChecksumOffload = .none, segmentSize: Int = 0) {
        precondition(length >= 0 && length <= slotSize, "frame of \(length) bytes in a \(slotSize)-byte slot")
        let t = tail.load(ordering: .relaxed)
        precondition(t &- head.load(ordering: .acquiring) < capacity, "commit to a full ring")
        let index = t & mask
        lengths[index] = Int32(length)
        checksums[index] = checksum
        segmentSizes[index] = UInt16(truncatingIfNeeded: segmentSize)
        // Sequentially consistent so that a consumer about to sleep either
        // sees this frame or is seen sleeping by the producer (see Wakeup).
        tail.store(t &+ 1, ordering: .sequentiallyConsistent)
    }

    /// Copies `frame` into the next slot and publishes it; false when full or too long.
    /// Producer only.
    @discardableResult
    public func push(_ frame: UnsafeRawBufferPointer, checksum: ChecksumOffload = .none) -> Bool {
        guard frame.count <= slotSize, let slot = reserve() else { return false }
        if let base = frame.baseAddress { slot.baseAddress!.copyMemory(from: base, byteCount: frame.count) }
        commit(length: frame.count, checksum: checksum)
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
    public func peek() -> UnsafeRawBufferPointer? { peekFrame(ahead: 0)?.bytes }

    /// The published frame `offset` places after the one `peek` returns, or
    /// nil when there are not that many; for handling several frames before
    /// releasing them in order. Consumer only.
    @inline(__always)
    public func peek(ahead offset: Int) -> UnsafeRawBufferPointer? { peekFrame(ahead: offset)?.bytes }

    /// Like `peek(ahead:)`, with what the link knows or asks about the frame.
    @inline(__always)
    public func peekFrame(ahead offset: Int = 0) -> RingFrame? {
        let h = head.load(ordering: .relaxed) &+ offset
        guard tail.load(ordering: .sequentiallyConsistent) &- h > 0 else { return nil }
        let index = h & mask
        return RingFrame(bytes: UnsafeRawBufferPointer(start: slotStart(at: h) + headroom, count: Int(lengths[index])),
                         checksum: checksums[index], segmentSize: Int(segmentSizes[index]))
    }

    /// Frees the slot returned by the last `peek`. Consumer only.
    @inline(__always)
    public func release() { release(count: 1) }

    /// Frees the `count` oldest slots. Consumer only.
    @inline(__always)
    public func release(count: Int) {
        let h = head.load(ordering: .relaxed)
        precondition(count >= 0 && tail.load(ordering: .acquiring) &- h >= count, "release of frames not published")
        head.store(h &+ count, ordering: .sequentiallyConsistent)
    }

    /// On an empty ring whose next slot is not the first, moves both ends
    /// forward to the next position of slot 0 and returns it (nil: not
    /// empty, or already there). A ring used a few frames at a time then
    /// keeps reusing its first slots, still in the cache and the TLB,
    /// instead of walking all of its memory (a ping-pong's frame in a cold
    /// slot cost about 0.3 us more). Positions only grow. Only while
    /// neither side can act: the caller is the consumer and holds off the
    /// producer.
    public func rewindIfEmpty() -> Int? {
        let t = tail.load(ordering: .relaxed)
        guard t & mask != 0, head.load(ordering: .relaxed) == t else { return nil }
        let next = (t | mask) &+ 1
        head.store(next, ordering: .sequentiallyConsistent)
        tail.store(next, ordering: .sequentiallyConsistent)
        return next
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
