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
/// Threads: the stack thread consumes the link's RX ring and runs timers;
/// the link's thread may take that role for the frames it just read when
/// the stack thread does not hold it (`role`), so a frame and its answer
/// need no thread hand-off. Application threads call in through
/// `withStack`. All hold one lock while inside the core, so the core stays
/// single-threaded and each ring has exactly one producer and one consumer
/// at any moment (the locks' hand-over orders the rings' sides).
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
    /// The stack thread's role: consuming the RX ring, running timers and
    /// deferred work. Held by the stack thread for each turn, or taken by
    /// the link's thread when free, so the RX ring has one consumer at a
    /// time and deferred work never runs on two threads at once.
    private let role = Lock()
    /// True while some thread holds `role`.
    private let roleHeld = Atomic<Bool>(false)
    /// Set once `start()` ran; until then frames wait for the stack thread.
    private let running = Atomic<Bool>(false)
    /// When the sleeping stack thread will next look at its timers
    /// (monotonic ns), 0 while awake.
    private let stackThreadWakesAt = Atomic<UInt64>(0)
    /// The next timer deadline (monotonic ns, `.max` for none) as the link's
    /// thread last saw it in the stack's role; reset by each stack-thread turn.
    private let linkThreadDeadline = Atomic<UInt64>(.max)

    /// Builds a stack over `link`. Call `start()` to run it.
    /// - Parameter handsFramesToLinkThread: lets the link's own thread (the
    ///   TAP driver's) handle the frames it read, in the stack thread's role,
    ///   whenever the stack thread does not hold it: no thread hand-off per
    ///   batch. Off, every frame goes through the stack thread. The
    ///   environment variable `TAPSTACK_LINK_THREAD_HANDOVER=0` turns it off
    ///   by default (for comparisons).
    public init(configuration: StackConfiguration, link: any LinkEndpoint,
                handsFramesToLinkThread: Bool = NetworkHost.linkThreadHandOverByDefault) {
        self.link = link
        self.configuration = configuration
        sink = RingSink(ring: link.tx)
        stack = NetworkStack(configuration: configuration, sink: sink)
        link.setTransmitSpaceHandler { [weak self] in self?.transmitSpaceFreed() }
        if handsFramesToLinkThread {
            link.setReceiveHandler { [weak self] in self?.handleOnLinkThread() ?? false }
        }
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
        // Whoever holds the stack thread's role runs it before letting go
        // (and `endTurn` passes on what arrives too late for that).
        if !deferredPending.exchange(true, ordering: .sequentiallyConsistent),
           !roleHeld.load(ordering: .sequentiallyConsistent) {
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

    /// Whether hosts let the link's thread handle frames unless told
    /// otherwise: yes, but for `TAPSTACK_LINK_THREAD_HANDOVER=0`.
    public static let linkThreadHandOverByDefault: Bool =
        getenv("TAPSTACK_LINK_THREAD_HANDOVER").map { String(cString: $0) != "0" } ?? true

    /// The stack's counters (a snapshot).
    public var counters: StackCounters { withStack { $0.counters } }

    /// Sends the gratuitous ARP and starts the stack thread.
    public func start() {
        withStack { $0.start(now: monotonicNow()) }
        running.store(true, ordering: .sequentiallyConsistent)
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

    /// One turn of the stack's own work, by whichever thread holds `role`:
    /// tells waiting senders the link has room, handles up to `batchLimit`
    /// received frames, runs due timers if `runTimers`, then the deferred
    /// work. Returns the frames handled and the next timer deadline.
    private func turn(now: StackInstant, runTimers: Bool) -> (handled: Int, deadline: StackInstant?) {
        let rx = link.rx
        // A plain load first: the exchange (a locked instruction) only when set.
        if writablePending.load(ordering: .relaxed), writablePending.exchange(false, ordering: .sequentiallyConsistent) {
            withStack { $0.notifyWritable() }
        }
        let (handled, deadline) = withStack { stack -> (Int, StackInstant?) in
            var handled = 0
            while handled < batchLimit, let frame = rx.peek() {
                stack.receive(frame: frame, now: now)
                rx.release()
                handled += 1
            }
            return (handled, runTimers ? stack.advance(to: now) : stack.nextDeadline)
        }
        runDeferred()
        return (handled, deadline)
    }

    /// Takes the stack thread's role, waiting for it if `wait`, else only if
    /// it is free. Returns whether this thread now holds it.
    private func takeRole(wait: Bool) -> Bool {
        if wait {
            role.lock()
        } else if !role.tryLock() {
            return false
        }
        roleHeld.store(true, ordering: .sequentiallyConsistent)
        return true
    }

    /// Gives the role back; deferred work queued by another thread while
    /// the role was held (so it did not wake the stack thread) is handed to
    /// the stack thread now.
    private func endTurn() {
        roleHeld.store(false, ordering: .sequentiallyConsistent)
        role.unlock()
        if deferredPending.load(ordering: .sequentiallyConsistent) { link.rxWakeup.signal() }
    }

    /// The link's thread, right after it published frames: handles them on
    /// that thread if no one else is in the stack's role (the stack thread
    /// then stays asleep and the frames cost no thread hand-off). Returns
    /// true when the RX ring is empty afterwards.
    private func handleOnLinkThread() -> Bool {
        guard running.load(ordering: .relaxed), !stopping.load(ordering: .relaxed), takeRole(wait: false) else { return false }
        // Timers stay with the stack thread: the link's thread cannot drain
        // the TX ring while it is in here, so it sends only what answers
        // the frames it brought.
        let (_, deadline) = turn(now: monotonicNow(), runTimers: false)
        let due = deadline?.nanoseconds ?? .max
        linkThreadDeadline.store(due, ordering: .sequentiallyConsistent)
        endTurn()
        // A timer due before the sleeping stack thread would look (one these
        // frames set, or one already due): wake it to run or re-arm. (If it
        // is only about to sleep, it sees `linkThreadDeadline` itself.)
        if due < stackThreadWakesAt.load(ordering: .sequentiallyConsistent) {
            link.rxWakeup.signal()
        }
        return link.rx.isEmpty
    }

    private func run() {
        let rx = link.rx
        var lastWork = StackInstant.zero
        var deadline: StackInstant?
        // Work for the stack thread: frames or deferred work no one else is
        // handling (a holder of the role handles them, or tells us when it
        // leaves any), a link with room again, a timer the link's thread saw.
        func hasWork(before wakesAt: UInt64) -> Bool {
            let free = !roleHeld.load(ordering: .sequentiallyConsistent)
            return (free && (!rx.isEmpty || deferredPending.load(ordering: .sequentiallyConsistent)))
                || writablePending.load(ordering: .relaxed) || stopping.load(ordering: .relaxed)
                || linkThreadDeadline.load(ordering: .sequentiallyConsistent) < wakesAt
        }
        while !stopping.load(ordering: .relaxed) {
            let now = monotonicNow()
            // Only a due timer is worth waiting for the role: when the link's
            // thread holds it, it is handling the frames itself.
            let timerDue = deadline.map { $0 <= now } ?? false
            if takeRole(wait: timerDue || writablePending.load(ordering: .relaxed)) {
                // This turn's deadline covers every timer armed so far.
                linkThreadDeadline.store(.max, ordering: .sequentiallyConsistent)
                let handled: Int
                (handled, deadline) = turn(now: now, runTimers: true)
                endTurn()
                if handled > 0 {
                    lastWork = now
                    continue
                }
                // Recently busy: look again for a while before paying for a sleep and a wake-up.
                if now.since(lastWork).nanoseconds < spinNanoseconds {
                    while !hasWork(before: 0) && monotonicNow().since(lastWork).nanoseconds < spinNanoseconds
                            && (deadline.map { monotonicNow() < $0 } ?? true) {
                        spinPause()
                    }
                    continue
                }
            }
            var timeout: Int32 = 1000
            if let deadline {
                let waitNanos = deadline.since(now).nanoseconds
                timeout = Int32(min(1000, (waitNanos + 999_999) / 1_000_000))
            }
            // When this sleep ends at the latest: the timer itself (the
            // timeout is rounded up to a millisecond), or the timeout.
            let wakesAt = min(deadline?.nanoseconds ?? .max, now.nanoseconds &+ UInt64(timeout) * 1_000_000)
            stackThreadWakesAt.store(wakesAt, ordering: .sequentiallyConsistent)
            link.rxWakeup.wait(timeoutMilliseconds: timeout) { hasWork(before: wakesAt) }
            stackThreadWakesAt.store(0, ordering: .sequentiallyConsistent)
        }
    }
}
