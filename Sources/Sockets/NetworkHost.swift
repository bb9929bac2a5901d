import Glibc
import Link
import Stack
import Synchronization
import Wire

/// Reads the monotonic clock as a `StackInstant`.
func monotonicNow() -> StackInstant {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return StackInstant(nanoseconds: UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec))
}

/// The TX ring seen as the core's frame sink; remembers whether a frame was
/// produced so the link is woken once per batch.
final class RingSink: FrameSink {
    let ring: FrameRing
    var produced = false
    init(ring: FrameRing) { self.ring = ring }

    func reserveFrame() -> UnsafeMutableRawBufferPointer? { ring.reserve() }

    func commitFrame(length: Int) {
        ring.commit(length: length)
        produced = true
    }

    func hasRoom(for frames: Int) -> Bool { ring.hasRoom(for: frames) }
}

/// A running stack: the core, the stack thread that feeds it frames and
/// timers, and the link it talks to.
///
/// Threads: the stack thread consumes the link's RX ring; application threads
/// call in through `withStack`. Both hold one lock while inside the core, so
/// the core stays single-threaded and the TX ring has exactly one producer at
/// any moment (the lock's hand-over orders the ring's producer side).
public final class NetworkHost: Sendable {
    /// The link the stack runs on (a TAP driver, or a memory link in tests).
    public let link: any LinkEndpoint
    /// The stack's identity and bounds.
    public let configuration: StackConfiguration

    private let lock = Lock()
    /// Guarded by `lock`.
    nonisolated(unsafe) private let stack: NetworkStack
    /// Guarded by `lock`.
    nonisolated(unsafe) private let sink: RingSink
    private let stopping = Atomic<Bool>(false)
    /// Set by the link's thread when the TX ring drained after being full.
    private let writablePending = Atomic<Bool>(false)
    /// Work to run on the stack thread outside the lock. Guarded by `lock`.
    nonisolated(unsafe) private var deferred: [() -> Void] = []
    private let deferredPending = Atomic<Bool>(false)
    /// How long the stack thread keeps looking for work before it sleeps:
    /// a frame arriving within it costs no wake-up. Only after activity, so
    /// an idle stack still uses no CPU.
    public let spinNanoseconds: UInt64 = stackSpinNanoseconds
    private let thread: Mutex<JoinableThread?> = Mutex(nil)

    /// Builds a stack over `link`. Call `start()` to run it.
    public init(configuration: StackConfiguration, link: any LinkEndpoint) {
        self.link = link
        self.configuration = configuration
        sink = RingSink(ring: link.tx)
        stack = NetworkStack(configuration: configuration, sink: sink)
        link.setTransmitSpaceHandler { [weak self] in self?.transmitSpaceFreed() }
    }

    /// On the link's thread: the TX ring drained after a send found it full.
    /// The stack thread tells the waiting sockets.
    private func transmitSpaceFreed() {
        writablePending.store(true, ordering: .sequentiallyConsistent)
        link.rxWakeup.forceSignal()
    }

    /// Runs `body` with exclusive access to the core, then wakes the link if
    /// frames were queued. Any thread; do not block inside.
    public func withStack<R, E: Error>(_ body: (NetworkStack) throws(E) -> R) throws(E) -> R {
        lock.lock()
        let result: Result<R, E>
        do throws(E) { result = .success(try body(stack)) } catch { result = .failure(error) }
        let produced = sink.produced
        sink.produced = false
        lock.unlock()
        if produced { link.transmitted() }
        return try result.get()
    }

    /// Queues `work` to run on the stack thread, outside the lock, after the
    /// frames being handled: for event-driven socket users, which call this
    /// from a readiness callback and then use the nonblocking calls. Call it
    /// only from inside the stack (a readiness callback or `withStack`).
    public func executeOnStackThread(_ work: @escaping () -> Void) {
        deferred.append(work)
        if !deferredPending.exchange(true, ordering: .sequentiallyConsistent) {
            link.rxWakeup.signal()
        }
    }

    /// Runs the deferred work queued so far.
    private func runDeferred() {
        guard deferredPending.exchange(false, ordering: .sequentiallyConsistent) else { return }
        let work = withStack { _ in
            let work = deferred
            deferred.removeAll(keepingCapacity: true)
            return work
        }
        for item in work { item() }
    }

    /// The stack's counters (a snapshot).
    public var counters: StackCounters { withStack { $0.counters } }

    /// Sends the gratuitous ARP and starts the stack thread.
    public func start() {
        withStack { $0.start(now: monotonicNow()) }
        let thread = JoinableThread(name: "tapstack-stack") { [self] in run() }
        self.thread.withLock { $0 = thread }
    }

    /// Stops and joins the stack thread, then the driver if `start(interface:)`
    /// made it. Sockets stay usable for cleanup.
    public func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        link.rxWakeup.forceSignal()
        let thread = self.thread.withLock { t in let taken = t; t = nil; return taken }
        thread?.join()
        ownedDriver.withLock { driver in
            driver?.stop()
            driver = nil
        }
    }

    /// The driver `start(interface:)` created, stopped with the host.
    private let ownedDriver = Mutex<EthernetDriver?>(nil)

    /// Opens the TAP device `interface` (creating it, or attaching to a
    /// persistent one), starts its driver thread and the stack: the one call
    /// an application needs before opening sockets.
    /// - Throws: `TapError` explaining in one line why the device cannot be used.
    public static func start(interface: String, configuration: StackConfiguration = .standard,
                             capture: PacketCapture? = nil) throws(TapError) -> NetworkHost {
        let driver = EthernetDriver(device: try TapDevice(name: interface), capture: capture)
        let host = NetworkHost(configuration: configuration, link: driver)
        host.ownedDriver.withLock { $0 = driver }
        driver.start()
        host.start()
        return host
    }

    /// Frames handled per lock hold: bounds how long an application waits.
    private let batchLimit = 64

    private func run() {
        let rx = link.rx
        var lastWork = StackInstant.zero
        while !stopping.load(ordering: .relaxed) {
            if writablePending.exchange(false, ordering: .sequentiallyConsistent) {
                withStack { $0.notifyWritable() }
            }
            let now = monotonicNow()
            let (handled, deadline) = withStack { stack -> (Int, StackInstant?) in
                var handled = 0
                while handled < batchLimit, let frame = rx.peek() {
                    stack.receive(frame: frame, now: now)
                    rx.release()
                    handled += 1
                }
                return (handled, stack.advance(to: now))
            }
            runDeferred()
            if handled > 0 {
                lastWork = now
                continue
            }
            // Recently busy: look again for a while before paying for a sleep and a wake-up.
            if now.since(lastWork).nanoseconds < spinNanoseconds {
                while rx.isEmpty && !deferredPending.load(ordering: .relaxed) && !writablePending.load(ordering: .relaxed)
                        && monotonicNow().since(lastWork).nanoseconds < spinNanoseconds
                        && (deadline.map { monotonicNow() < $0 } ?? true) {
                    spinPause()
                }
                continue
            }
            var timeout: Int32 = 1000
            if let deadline {
                let waitNanos = deadline.since(now).nanoseconds
                timeout = Int32(min(1000, (waitNanos + 999_999) / 1_000_000))
            }
            link.rxWakeup.wait(timeoutMilliseconds: timeout) {
                !rx.isEmpty || stopping.load(ordering: .relaxed) || writablePending.load(ordering: .relaxed)
                    || deferredPending.load(ordering: .relaxed)
            }
        }
    }
}
