import Glibc
import Synchronization

/// Counters kept by the driver thread; readable from any thread.
public final class DriverCounters: Sendable {
    public let rxFrames = Atomic<UInt64>(0)
    public let rxBytes = Atomic<UInt64>(0)
    /// Frames read from the device but dropped because the RX ring was full.
    public let rxRingFull = Atomic<UInt64>(0)
    public let rxErrors = Atomic<UInt64>(0)
    public let txFrames = Atomic<UInt64>(0)
    public let txBytes = Atomic<UInt64>(0)
    /// Writes the device refused (e.g. EIO while the interface is down); the frame is dropped.
    public let txErrors = Atomic<UInt64>(0)
    public let wakeups = Atomic<UInt64>(0)
    /// io_uring submissions, each carrying a batch of reads and writes.
    public let batchSubmissions = Atomic<UInt64>(0)
    /// Times the driver moved between io_uring and read()/write() with the traffic's pace.
    public let ioModeSwitches = Atomic<UInt64>(0)
    /// Batches of received frames the stack handled on the driver thread.
    public let rxBatchesInline = Atomic<UInt64>(0)
    /// Batches of received frames left for the stack thread (it was busy, or there is no hand-over).
    public let rxBatchesToStackThread = Atomic<UInt64>(0)

    public init() {}

    /// Name and value of every counter, in a stable order.
    public var snapshot: [(String, UInt64)] {
        [("link.rx_frames", rxFrames.load(ordering: .relaxed)),
         ("link.rx_bytes", rxBytes.load(ordering: .relaxed)),
         ("link.rx_drop_ring_full", rxRingFull.load(ordering: .relaxed)),
         ("link.rx_errors", rxErrors.load(ordering: .relaxed)),
         ("link.tx_frames", txFrames.load(ordering: .relaxed)),
         ("link.tx_bytes", txBytes.load(ordering: .relaxed)),
         ("link.tx_errors", txErrors.load(ordering: .relaxed)),
         ("link.driver_wakeups", wakeups.load(ordering: .relaxed)),
         ("link.io_uring_submissions", batchSubmissions.load(ordering: .relaxed)),
         ("link.io_mode_switches", ioModeSwitches.load(ordering: .relaxed)),
         ("link.rx_batches_inline", rxBatchesInline.load(ordering: .relaxed)),
         ("link.rx_batches_to_stack_thread", rxBatchesToStackThread.load(ordering: .relaxed))]
    }
}

/// The monotonic clock in nanoseconds (vDSO: no system call).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// How the driver moves frames to and from the TAP device.
public enum LinkIOMode: String, Sendable, CaseIterable {
    /// One `read()` or `write()` system call per frame.
    case syscalls
    /// A batch of reads and writes per io_uring submission (one system call);
    /// falls back to `syscalls` when the kernel refuses io_uring. While
    /// traffic is light (a frame or two per pass, as in a ping-pong) the
    /// driver uses read()/write(), which cost less for single frames.
    case ioUring = "io_uring"
}

/// The Ethernet "driver": a dedicated thread, the only code touching the TAP
/// fd, moving frames TAP → RX ring and TX ring → TAP in batches. It sleeps in
/// `poll()` on the fd and its eventfd when there is nothing to do.
public final class EthernetDriver: LinkEndpoint {
    /// The TAP device this driver owns.
    public let device: TapDevice
    public let rx: FrameRing
    public let tx: FrameRing
    public let rxWakeup = Wakeup()
    /// Wakes the driver when the stack queued frames in `tx`.
    private let txWakeup = Wakeup()
    /// What the driver thread has done; readable from any thread.
    public let counters = DriverCounters()
    /// The largest frame read or written (no FCS).
    public let maximumFrameLength: Int
    /// Frames moved per direction before looking at the other one.
    public let batchSize: Int

    /// The I/O mode asked for.
    public let requestedIOMode: LinkIOMode
    /// Why io_uring could not be used, once the driver thread found out (nil when it is used).
    public var ioUringUnavailableReason: String? { ioUringFailure.withLock { $0 } }
    private let ioUringFailure = Mutex<String?>(nil)
    private let ioUringActive = Atomic<Bool>(false)
    /// The I/O mode in use (set when the driver thread starts).
    public var ioMode: LinkIOMode { ioUringActive.load(ordering: .relaxed) ? .ioUring : .syscalls }

    private let stopping = Atomic<Bool>(false)
    private let transmitSpace = TransmitSpaceNotifier()
    /// The stack's hand-over for received frames; read once when the thread starts.
    private let receiveHandOver = ReceiveHandOver()
    /// After handing frames to the stack, how long to watch the TX ring for
    /// the answer before sleeping in poll(): a reply within it needs no wake-up.
    public let spinNanoseconds: UInt64 = driverSpinNanoseconds
    /// Frames in and out are copied here, if set.
    public let capture: PacketCapture?
    /// Sees every frame in and out on the driver thread (for trace logging); must not block.
    public let observer: (@Sendable (FrameDirection, UnsafeRawBufferPointer) -> Void)?
    // Written before the thread starts and after it is joined.
    nonisolated(unsafe) private var thread: JoinableThread?

    /// - Parameters:
    ///   - capture: frames in and out are copied here by the driver thread.
    ///   - observer: called with every frame in and out, on the driver thread.
    public init(device: TapDevice, ringCapacity: Int = 1024, maximumFrameLength: Int = 1514,
                batchSize: Int = 64, ioMode: LinkIOMode = .ioUring, capture: PacketCapture? = nil,
                observer: (@Sendable (FrameDirection, UnsafeRawBufferPointer) -> Void)? = nil) {
        self.device = device
        requestedIOMode = ioMode
        self.maximumFrameLength = maximumFrameLength
        self.batchSize = batchSize
        rx = FrameRing(capacity: ringCapacity, slotSize: maximumFrameLength)
        tx = FrameRing(capacity: ringCapacity, slotSize: maximumFrameLength)
        self.capture = capture
        self.observer = observer
    }

    public func transmitted() { txWakeup.signal() }

    public func setTransmitSpaceHandler(_ handler: @escaping @Sendable () -> Void) { transmitSpace.set(handler) }

    public func setReceiveHandler(_ handler: @escaping @Sendable () -> Bool) { receiveHandOver.set(handler) }

    /// Starts the capture thread, if any, and the driver thread; returns once
    /// the driver thread has chosen its I/O mode (see `ioMode`).
    public func start() {
        precondition(thread == nil)
        capture?.start()
        let started = StartSignal()
        thread = JoinableThread(name: "tapstack-driver") { [self] in run(started: started) }
        started.wait()
    }

    /// Stops and joins the driver thread, sending what is queued first, then
    /// stops the capture (writing all it holds, closing the file). Returns
    /// false when the capture's writer was stuck and had to be left behind.
    @discardableResult
    public func stop() -> Bool {
        stopping.store(true, ordering: .sequentiallyConsistent)
        txWakeup.forceSignal()
        thread?.join()
        thread = nil
        return capture?.stop() ?? true
    }

    /// Sets up io_uring if asked for; on this thread, which alone may use it.
    private func makeBatchedIO() -> BatchedTapIO? {
        guard requestedIOMode == .ioUring else { return nil }
        do {
            let io = try BatchedTapIO(fd: device.fd, capacity: 2 * batchSize)
            ioUringActive.store(true, ordering: .relaxed)
            return io
        } catch {
            ioUringFailure.withLock { $0 = "io_uring unavailable (\(error)); using read()/write()" }
            return nil
        }
    }

    private func run(started: StartSignal) {
        let fd = device.fd
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: maximumFrameLength, alignment: 16)
        defer { scratch.deallocate() }
        var batched = makeBatchedIO()
        let handOver = receiveHandOver.current
        // Gives frames just read to the stack: on this thread when the stack
        // is free (no thread hand-off: the answer is in the TX ring before we
        // look at it), else by waking the stack thread.
        func deliver() {
            if handOver?() ?? false {
                counters.rxBatchesInline.add(1, ordering: .relaxed)
            } else {
                counters.rxBatchesToStackThread.add(1, ordering: .relaxed)
                rxWakeup.signal()
            }
        }
        started.signal()
        // Reads to queue per io_uring batch: grows while every read finds a
        // frame, shrinks to what came, so an idle link costs one empty read.
        var readAhead = 2
        var lastReceive: UInt64 = 0
        // When a frame last came or went.
        var lastFrame: UInt64 = 0
        // Frames went to the stack and no frame has come back yet.
        var awaitingAnswer = false
        var pace = TrafficPace()
        // Read once: a global's lazy-initialisation check per pass is not needed.
        let adaptsToPace = adaptiveLinkIO
        while !stopping.load(ordering: .relaxed) {
            let received: Int, sent: Int
            var delivered = false
            if let io = batched, !rx.isFull, !pace.isLight {
                do {
                    (sent, received) = try exchange(io, readAhead: readAhead)
                    readAhead = received == readAhead ? min(2 * readAhead, batchSize) : max(received + 1, 2)
                } catch {
                    ioUringFailure.withLock { $0 = "io_uring failed (\(error)); using read()/write()" }
                    ioUringActive.store(false, ordering: .relaxed)
                    batched = nil
                    continue
                }
            } else {
                received = receiveBatch(fd: fd, scratch: scratch)
                if received > 0 {
                    deliver()
                    delivered = true
                }
                sent = transmitBatch(fd: fd)
            }
            if adaptsToPace && batched != nil && pace.record(framesMoved: received + sent) {
                counters.ioModeSwitches.add(1, ordering: .relaxed)
            }
            if received > 0 {
                if !delivered { deliver() }
                lastReceive = monotonicNanoseconds()
                awaitingAnswer = true
            }
            if sent > 0 {
                transmitSpace.notifyIfWaiting(tx)
                awaitingAnswer = false
                lastFrame = monotonicNanoseconds()
            } else if received > 0 {
                lastFrame = lastReceive
            }
            if received == 0 && sent == 0 && awaitingAnswer {
                // The stack is working on what we just gave it: wait for its
                // answer here rather than in poll(). Once it came (or the
                // window passed) go back to the device at once.
                var elapsed = monotonicNanoseconds() &- lastReceive
                while tx.isEmpty && elapsed < spinNanoseconds {
                    spinPause(elapsed: elapsed)
                    elapsed = monotonicNanoseconds() &- lastReceive
                }
                if tx.isEmpty { awaitingAnswer = false }
                continue
            }
            if received == 0 && sent == 0 && monotonicNanoseconds() &- lastFrame < busyPollNanoseconds {
                // Busy polling, briefly after traffic: the next frame of a
                // conversation is read without a wake-up (which costs tens
                // of microseconds on a virtual CPU that went idle).
                spinPause()
                continue
            }
            if received == 0 && sent == 0 {
                counters.wakeups.add(1, ordering: .relaxed)
                txWakeup.wait(timeoutMilliseconds: -1, extraFD: fd, extraEvents: Int16(POLLIN)) {
                    !tx.isEmpty || stopping.load(ordering: .relaxed)
                }
            }
        }
        // Send what the stack queued before it stopped.
        while transmitBatch(fd: fd) > 0 {}
    }

    /// Writes up to `batchSize` frames from the TX ring and reads up to
    /// `readAhead` frames into free RX slots, all in one io_uring submission.
    /// Returns the frames written and read.
    private func exchange(_ io: BatchedTapIO, readAhead: Int) throws(Errno) -> (sent: Int, received: Int) {
        var writes = 0
        while writes < batchSize, let frame = tx.peek(ahead: writes) {
            _ = io.write(frame)
            writes += 1
        }
        var reads = 0
        while reads < readAhead, let slot = rx.reserve(ahead: reads) {
            _ = io.read(into: UnsafeMutableRawBufferPointer(rebasing: slot[0..<min(slot.count, maximumFrameLength)]))
            reads += 1
        }
        counters.batchSubmissions.add(1, ordering: .relaxed)
        var failure: Errno?
        do { try io.run() } catch { failure = error }

        for index in 0..<writes {
            let frame = tx.peek()!
            let n = io.result(index)
            finishTransmit(frame, written: n >= 0)
        }
        // Reads complete in order; a frame that arrived just after an empty
        // read can still land in a later slot, so close the gap before publishing.
        var received = 0
        for index in 0..<reads {
            let n = io.result(writes + index)
            if n <= 0 {
                if n < 0 && n != -Int(EAGAIN) && n != -Int(ECANCELED) {
                    counters.rxErrors.add(1, ordering: .relaxed)
                }
                continue
            }
            let slot = rx.reserve()!
            if index != received {
                let source = rx.reserve(ahead: index - received)!
                slot.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: n)
            }
            recordReceived(UnsafeRawBufferPointer(rebasing: slot[0..<n]))
            rx.commit(length: n)
            received += 1
        }
        if let failure { throw failure }
        return (writes, received)
    }

    /// Reads up to `batchSize` frames into the RX ring; returns how many were read.
    private func receiveBatch(fd: Int32, scratch: UnsafeMutableRawBufferPointer) -> Int {
        var count = 0
        while count < batchSize {
            let slot = rx.reserve()
            let target = slot ?? scratch
            let n = read(fd, target.baseAddress, min(target.count, maximumFrameLength))
            if n < 0 {
                if errno == EINTR { continue }
                if errno != EAGAIN { counters.rxErrors.add(1, ordering: .relaxed) }
                break
            }
            count += 1
            recordReceived(UnsafeRawBufferPointer(rebasing: target[0..<n]))
            if slot != nil {
                rx.commit(length: n)
            } else {
                counters.rxRingFull.add(1, ordering: .relaxed)
            }
        }
        return count
    }

    /// Counts a frame read from the device and shows it to the capture and observer.
    @inline(__always)
    private func recordReceived(_ frame: UnsafeRawBufferPointer) {
        counters.rxFrames.add(1, ordering: .relaxed)
        counters.rxBytes.add(UInt64(frame.count), ordering: .relaxed)
        capture?.record(frame)
        observer?(.inbound, frame)
    }

    /// Accounts for the oldest TX frame, written or refused by the device, and frees its slot.
    @inline(__always)
    private func finishTransmit(_ frame: UnsafeRawBufferPointer, written: Bool) {
        if written {
            counters.txFrames.add(1, ordering: .relaxed)
            counters.txBytes.add(UInt64(frame.count), ordering: .relaxed)
            capture?.record(frame)
            observer?(.outbound, frame)
        } else {
            counters.txErrors.add(1, ordering: .relaxed)
        }
        tx.release()
    }

    /// Writes up to `batchSize` frames from the TX ring; returns how many were taken.
    private func transmitBatch(fd: Int32) -> Int {
        var count = 0
        while count < batchSize, let frame = tx.peek() {
            let n = write(fd, frame.baseAddress, frame.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { break }  // keep it; poll will retry
            finishTransmit(frame, written: n >= 0)
            count += 1
        }
        return count
    }
}

/// Tells a starting thread's creator that the thread has set itself up.
private final class StartSignal: Sendable {
    private let done = Atomic<Bool>(false)
    private let wakeup = Wakeup()

    func signal() {
        done.store(true, ordering: .sequentiallyConsistent)
        wakeup.signal()
    }

    func wait() {
        while !done.load(ordering: .sequentiallyConsistent) {
            wakeup.wait(timeoutMilliseconds: 100) { done.load(ordering: .sequentiallyConsistent) }
        }
    }
}
