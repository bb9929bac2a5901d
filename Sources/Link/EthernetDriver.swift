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
         ("link.driver_wakeups", wakeups.load(ordering: .relaxed))]
    }
}

/// The monotonic clock in nanoseconds (vDSO: no system call).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
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

    private let stopping = Atomic<Bool>(false)
    private let transmitSpace = TransmitSpaceNotifier()
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
                batchSize: Int = 64, capture: PacketCapture? = nil,
                observer: (@Sendable (FrameDirection, UnsafeRawBufferPointer) -> Void)? = nil) {
        self.device = device
        self.maximumFrameLength = maximumFrameLength
        self.batchSize = batchSize
        rx = FrameRing(capacity: ringCapacity, slotSize: maximumFrameLength)
        tx = FrameRing(capacity: ringCapacity, slotSize: maximumFrameLength)
        self.capture = capture
        self.observer = observer
    }

    public func transmitted() { txWakeup.signal() }

    public func setTransmitSpaceHandler(_ handler: @escaping @Sendable () -> Void) { transmitSpace.set(handler) }

    /// Starts the capture thread, if any, and the driver thread.
    public func start() {
        precondition(thread == nil)
        capture?.start()
        thread = JoinableThread(name: "tapstack-driver") { [self] in run() }
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

    private func run() {
        let fd = device.fd
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: maximumFrameLength, alignment: 16)
        defer { scratch.deallocate() }
        var lastReceive: UInt64 = 0
        // Frames went to the stack and no frame has come back yet.
        var awaitingAnswer = false
        while !stopping.load(ordering: .relaxed) {
            let received = receiveBatch(fd: fd, scratch: scratch)
            let sent = transmitBatch(fd: fd)
            if received > 0 {
                rxWakeup.signal()
                lastReceive = monotonicNanoseconds()
                awaitingAnswer = true
            }
            if sent > 0 {
                transmitSpace.notifyIfWaiting(tx)
                awaitingAnswer = false
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
            counters.rxFrames.add(1, ordering: .relaxed)
            counters.rxBytes.add(UInt64(n), ordering: .relaxed)
            let frame = UnsafeRawBufferPointer(rebasing: target[0..<n])
            capture?.record(frame)
            observer?(.inbound, frame)
            if slot != nil {
                rx.commit(length: n)
            } else {
                counters.rxRingFull.add(1, ordering: .relaxed)
            }
        }
        return count
    }

    /// Writes up to `batchSize` frames from the TX ring; returns how many were taken.
    private func transmitBatch(fd: Int32) -> Int {
        var count = 0
        while count < batchSize, let frame = tx.peek() {
            let n = write(fd, frame.baseAddress, frame.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { break }  // keep it; poll will retry
            if n < 0 {
                counters.txErrors.add(1, ordering: .relaxed)
            } else {
                counters.txFrames.add(1, ordering: .relaxed)
                counters.txBytes.add(UInt64(frame.count), ordering: .relaxed)
                capture?.record(frame)
                observer?(.outbound, frame)
            }
            tx.release()
            count += 1
        }
        return count
    }
}
