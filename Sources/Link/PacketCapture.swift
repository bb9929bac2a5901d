import Glibc
import SocketAPI
import Synchronization
import Wire

/// Captures frames at the link endpoint without slowing the driver: the
/// driver copies each frame (cut to the snap length, with its timestamp)
/// into a bounded SPSC ring, and a capture thread of its own filters and
/// writes them. When the writer falls behind (a slow disk, a stalled pipe),
/// frames are dropped from the capture, and counted, never from the stack.
public final class PacketCapture: Sendable {
    /// Slot header: seconds, microseconds, original length, direction
    /// (0 unknown, 1 in, 2 out), drop reason (-1 none): five Int64.
    private static let headerLength = 40

    private let ring: FrameRing
    private let wakeup = Wakeup()
    private let stopping = Atomic<Bool>(false)
    /// Signalled by the capture thread when it has finished.
    private let finished = Wakeup()
    private let isFinished = Atomic<Bool>(false)
    private let flushEachFrame: Bool
    private let snapLength: Int
    // Used only by the capture thread while it runs, and by `stop` after joining it.
    nonisolated(unsafe) private let writer: PcapWriter
    nonisolated(unsafe) private var thread: JoinableThread?
    /// Names of the drop reasons `record` may be given, by number (the stack's counters).
    private let dropReasonNames: [String]

    /// Frames handed to the capture.
    public let offered = Atomic<UInt64>(0)
    /// Frames lost because the capture thread fell behind (the ring was full).
    public let droppedBehind = Atomic<UInt64>(0)
    /// Frames written to the file.
    public let written = Atomic<UInt64>(0)
    /// Frames the filter rejected.
    public let filtered = Atomic<UInt64>(0)
    /// Frames not written because writing had failed (disk full, reader gone).
    public let writeErrors = Atomic<UInt64>(0)

    /// - Parameters:
    ///   - flushEachFrame: push every frame to the file at once (for a live
    ///     reader on a pipe); otherwise frames are flushed when the link is idle.
    ///   - ringCapacity: frames buffered between the driver and the writer.
    ///   - dropReasonNames: the name of each drop reason number `record` may
    ///     carry, written as the frame's comment (pcapng only).
    public init(writer: PcapWriter, flushEachFrame: Bool, ringCapacity: Int = 4096, dropReasonNames: [String] = []) {
        self.writer = writer
        self.dropReasonNames = dropReasonNames
        self.flushEachFrame = flushEachFrame
        snapLength = writer.snapLength
        ring = FrameRing(capacity: ringCapacity, slotSize: Self.headerLength + min(writer.snapLength, 1514))
    }

    /// Starts the capture thread.
    public func start() {
        thread = JoinableThread(name: "tapstack-pcap") { [self] in run() }
    }

    /// Copies `frame` into the capture ring; never blocks. Called by the
    /// link's I/O thread only (the ring's single producer). A checksum the
    /// frame leaves partial (`.partial`) is completed in the copy, so the
    /// capture shows the frame as the peer receives it. `dropReason`: the
    /// index in `dropReasonNames` of why the stack dropped it, or -1.
    @inline(__always)
    public func record(_ frame: UnsafeRawBufferPointer, checksum: ChecksumOffload = .none,
                       direction: FrameDirection? = nil, dropReason: Int = -1) {
        offered.add(1, ordering: .relaxed)
        guard let slot = ring.reserve() else {
            droppedBehind.add(1, ordering: .relaxed)
            return
        }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        slot.storeBytes(of: Int64(now.tv_sec), toByteOffset: 0, as: Int64.self)
        slot.storeBytes(of: Int64(now.tv_nsec / 1000), toByteOffset: 8, as: Int64.self)
        slot.storeBytes(of: Int64(frame.count), toByteOffset: 16, as: Int64.self)
        slot.storeBytes(of: Int64(direction == .inbound ? 1 : direction == .outbound ? 2 : 0), toByteOffset: 24, as: Int64.self)
        slot.storeBytes(of: Int64(dropReason), toByteOffset: 32, as: Int64.self)
        let kept = min(frame.count, slot.count - Self.headerLength)
        if kept > 0 { (slot.baseAddress! + Self.headerLength).copyMemory(from: frame.baseAddress!, byteCount: kept) }
        if case .partial(let start, let offset) = checksum, Int(start) + Int(offset) + 2 <= kept,
           let value = completedChecksum(of: frame, start: Int(start), offset: Int(offset)) {
            slot.storeBytes(of: value.bigEndian, toByteOffset: Self.headerLength + Int(start) + Int(offset), as: UInt16.self)
        }
        ring.commit(length: Self.headerLength + kept)
        wakeup.signal()
    }

    /// Stops the capture thread after it wrote everything recorded, then
    /// flushes and closes the file. Waits at most `timeoutMilliseconds`:
    /// a writer stuck on a pipe nobody reads is left behind (the process is
    /// exiting) rather than holding up the shutdown. Returns false then.
    @discardableResult
    public func stop(timeoutMilliseconds: Int32 = 500) -> Bool {
        stopping.store(true, ordering: .sequentiallyConsistent)
        wakeup.forceSignal()
        var waited: Int32 = 0
        while !isFinished.load(ordering: .sequentiallyConsistent) && waited < timeoutMilliseconds {
            finished.wait(timeoutMilliseconds: 50) { isFinished.load(ordering: .sequentiallyConsistent) }
            waited += 50
        }
        guard isFinished.load(ordering: .sequentiallyConsistent) else { return false }
        thread?.join()
        thread = nil
        writer.close()
        return true
    }

    private func run() {
        while !stopping.load(ordering: .relaxed) {
            if drain() == 0 {
                writer.flush()
                wakeup.wait(timeoutMilliseconds: 1000) { !ring.isEmpty || stopping.load(ordering: .relaxed) }
            }
        }
        drain()  // what the driver recorded before it stopped
        writer.flush()
        isFinished.store(true, ordering: .sequentiallyConsistent)
        finished.forceSignal()
    }

    /// Writes what the ring holds; returns how many frames.
    @discardableResult
    private func drain() -> Int {
        var count = 0
        while let slot = ring.peek() {
            let seconds = Int(slot.loadUnaligned(fromByteOffset: 0, as: Int64.self))
            let micros = Int(slot.loadUnaligned(fromByteOffset: 8, as: Int64.self))
            let length = Int(slot.loadUnaligned(fromByteOffset: 16, as: Int64.self))
            let directionCode = slot.loadUnaligned(fromByteOffset: 24, as: Int64.self)
            let reason = Int(slot.loadUnaligned(fromByteOffset: 32, as: Int64.self))
            let direction: FrameDirection? = directionCode == 1 ? .inbound : directionCode == 2 ? .outbound : nil
            let comment = dropReasonNames.indices.contains(reason) ? "dropped by the stack: \(dropReasonNames[reason])" : nil
            let frame = UnsafeRawBufferPointer(rebasing: slot[Self.headerLength...])
            if writer.hasFailed {
                writeErrors.add(1, ordering: .relaxed)
            } else if writer.write(frame, originalLength: length, seconds: seconds, microseconds: micros,
                                           direction: direction, comment: comment) {
                written.add(1, ordering: .relaxed)
                if flushEachFrame { writer.flush() }
            } else {
                filtered.add(1, ordering: .relaxed)
            }
            ring.release()
            count += 1
        }
        return count
    }

    /// Name and value of every capture counter.
    public var snapshot: [(String, UInt64)] {
        [("capture.offered", offered.load(ordering: .relaxed)),
         ("capture.written", written.load(ordering: .relaxed)),
         ("capture.filtered", filtered.load(ordering: .relaxed)),
         ("capture.drop_writer_behind", droppedBehind.load(ordering: .relaxed)),
         ("capture.drop_write_error", writeErrors.load(ordering: .relaxed))]
    }
}
