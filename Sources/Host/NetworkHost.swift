// The executor's rule:
// 1. One thread, the executor, runs the stack core to completion for each
//    batch (the frames the link read, the timers due, the work they queued),
//    then gives the frames the core produced to the link in one device I/O
//    turn, which is also where it sleeps when nothing is left to do.
// 2. Any other thread reaches the core only through `withStack`, a short
//    critical section on the core's lock, and wakes the sleeping executor
//    when it left frames to send, a timer due sooner, or work to run.
// 3. Readiness callbacks (readable and writable) run inside the core on the
//    thread that changed the state, usually the executor itself; work they
//    queue with `execute` runs on the executor after the batch, outside the lock.
// 4. Sources outside the link (`ExecutorSource`: another process's ring)
//    that rang are looked at on every turn until the executor sleeps, when
//    they are armed to ring again (their eventfd, which the link watches).

import CTapstackSystem
import Glibc
import Link
import SocketAPI
import Stack
import Synchronization
import Wire

/// Reads the monotonic clock as a `StackInstant`.
public func monotonicNow() -> StackInstant { StackInstant(nanoseconds: monotonicNanoseconds()) }

/// The wall-clock time (CLOCK_REALTIME, nanoseconds since the epoch) of a
/// past `instant` of the monotonic clock: what SO_TIMESTAMP reports.
public func wallClockNanoseconds(at instant: StackInstant) -> UInt64 {
    var real = timespec()
    clock_gettime(CLOCK_REALTIME, &real)
    let realNow = UInt64(real.tv_sec) &* 1_000_000_000 &+ UInt64(real.tv_nsec)
    return realNow &- monotonicNow().since(instant).nanoseconds
}

/// The TX ring seen as the core's frame sink: remembers whether a frame was
/// produced (to wake the executor) and whether a sender found it full (to
/// tell it when there is room again).
final class RingSink: FrameSink {
    let ring: FrameRing
    let completesChecksums: Bool
    /// Guarded by the core's lock.
    @exclusivity(unchecked) var produced = false
    /// Set when a send found the ring full; cleared when senders were told.
    let waitingForRoom = Atomic<Bool>(false)

    init(ring: FrameRing, completesChecksums: Bool) {
        self.ring = ring
        self.completesChecksums = completesChecksums
    }

    var maximumFrameLength: Int { ring.slotSize }

    @inline(__always)
    func reserveFrame() -> UnsafeMutableRawBufferPointer? { ring.reserve() }

    @inline(__always)
    func commitFrame(length: Int, checksum: ChecksumOffload) {
        ring.commit(length: length, checksum: checksum)
        produced = true
    }

    func hasRoom(for frames: Int) -> Bool {
        if ring.hasRoom(for: frames) { return true }
        waitingForRoom.store(true, ordering: .sequentiallyConsistent)
        return false
    }
}

/// A closure queued with `execute`. In a struct, the array holds the closure
/// as it is: an array of bare closures would wrap each in a thunk, one
/// allocation per queued item.
struct DeferredWork {
    let run: () -> Void
}

/// How the executor waits: sleeping when idle (the default), or
/// busy-polling the link for a while after traffic first, and on which CPUs.
public struct ExecutorOptions: Sendable, Equatable {
    /// What the executor does when it runs out of work: sleep at once, or
    /// poll first (a fixed time, or adaptively). Polling catches the next
    /// frame of a conversation without a wake-up, at the price of a CPU
    /// while it lasts.
    public var idlePolicy: IdlePolicy = .sleep
    /// CPUs the executor thread may run on (empty: any).
    public var cpus: [Int] = []
    /// Frames handled per hold of the core's lock (bounds how long other threads wait for it).
    public var batchLimit = 64

    /// Options with `idlePolicy` and `cpus`.
    public init(idlePolicy: IdlePolicy = .sleep, cpus: [Int] = []) {
        self.idlePolicy = idlePolicy
        self.cpus = cpus
    }

    /// Options that poll a fixed `busyPollNanoseconds` (0: sleep at once).
    public init(busyPollNanoseconds: UInt64, cpus: [Int] = []) {
        self.init(idlePolicy: busyPollNanoseconds > 0 ? .poll(nanoseconds: busyPollNanoseconds) : .sleep, cpus: cpus)
    }

    /// The fixed polling time (0 unless `idlePolicy` is `.poll`).
    public var busyPollNanoseconds: UInt64 {
        if case .poll(let nanoseconds) = idlePolicy { nanoseconds } else { 0 }
    }
}

/// A running stack: the core, the executor thread that runs it over a link,
/// and the core's lock for every other thread.
public final class NetworkHost: Sendable {
    /// The link the stack runs on (a TAP link, or a memory link in tests).
    public let link: any LinkEndpoint
    /// The stack's identity and bounds.
    public let configuration: StackConfiguration
    /// How the executor waits.
    public let options: ExecutorOptions
    /// The link's FIFOs, kept here so the hot path does not fetch them through the protocol.
    private let rx: FrameRing
    private let tx: FrameRing

    private let lock = Lock()
    /// Guarded by `lock`.
    nonisolated(unsafe) private let stack: NetworkStack
    /// `produced` guarded by `lock`.
    nonisolated(unsafe) private let sink: RingSink
    /// Work for the executor, after the batch. Guarded by `lock`.
    @exclusivity(unchecked) nonisolated(unsafe) private var deferred: [DeferredWork] = []
    /// Whether the stack has announced itself (done once the link is up); executor thread only.
    nonisolated(unsafe) private var announced = false
    /// Emptied arrays for `runDeferred`; executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var spareDeferred: [[DeferredWork]] = []
    private let deferredPending = Atomic<Bool>(false)
    /// `executeAtEndOfTurn`'s work; executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var endOfTurn: [DeferredWork] = []
    private let stopping = Atomic<Bool>(false)
    /// True while the executor sleeps in the link, or is about to.
    private let sleeping = Atomic<Bool>(false)
    /// When the sleeping executor will look at its timers (monotonic ns).
    private let sleepsUntil = Atomic<UInt64>(.max)
    /// The core's next timer (monotonic ns, `.max` for none), as `withStack` left it.
    private let nextDeadline = Atomic<UInt64>(.max)
    /// The executor's thread id (gettid), 0 before it starts.
    private let executorThread = Atomic<Int>(0)
    /// When the executor's current turn started (monotonic ns), 0 while it
    /// sleeps or is not running: see `now()`.
    private let turnStart = Atomic<UInt64>(0)
    private let thread = Mutex<JoinableThread?>(nil)
    /// Sources registered by any thread; the executor copies them when `sourcesChanged`.
    private let registeredSources = Mutex<[any ExecutorSource]>([])
    private let sourcesChanged = Atomic<Bool>(false)
    /// The executor's view of the sources; executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var sources = SourceSet()
    /// Whether and how long to poll before sleeping; executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var polling: IdlePolling
    /// When the executor last ran out of work (monotonic ns; 0 while it has
    /// work): the start of the idle period the poll window counts from.
    /// Executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var idleSince: UInt64 = 0
    /// When the last turn that polled (found nothing, did not sleep) began; executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var lastPollTurn: UInt64 = 0
    /// The executor's preemption count when it began polling in this idle
    /// period (`.max`: it has not polled); executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var preemptionsWhenPolling: UInt64 = .max
    /// Set when two poll turns of this idle period were further apart than
    /// `IdlePolling.preemptionGap` (steal); executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var pollLostCPU = false
    /// Until when (monotonic ns) the executor waits for an answer without
    /// sleeping (`awaitAnswer`; 0: it does not); executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var answerDue: UInt64 = 0
    /// `polling`'s window and limit, for other threads (see `idlePollingState`).
    private let publishedWindow = Atomic<UInt64>(0)
    private let publishedLimit = Atomic<UInt64>(0)

    /// Frames the core has handled; the "frame handled" hook for tests.
    private let framesHandled = Atomic<UInt64>(0)
    /// Times the executor went to sleep with nothing left to do; the "idle" hook.
    private let idleTurns = Atomic<UInt64>(0)
    private let idleWatchers = Atomic<Int>(0)
    private let idleSignal = Event()

    /// Builds a stack over `link`. Call `start()` to run it.
    /// - Throws: `ConfigurationError` when the link's frames cannot carry the configured MTU.
    public init(configuration: StackConfiguration, link: any LinkEndpoint, options: ExecutorOptions = ExecutorOptions()) throws(ConfigurationError) {
        self.link = link
        self.configuration = configuration
        self.options = options
        rx = link.rx
        tx = link.tx
        sink = RingSink(ring: link.tx, completesChecksums: link.completesChecksums)
        polling = IdlePolling(policy: options.idlePolicy)
        publishedWindow.store(polling.window, ordering: .relaxed)
        publishedLimit.store(polling.limit, ordering: .relaxed)
        stack = try NetworkStack(configuration: configuration, sink: sink)
        deferred.reserveCapacity(64)
        spareDeferred.reserveCapacity(8)
    }

    // MARK: Starting and stopping

    /// Starts the executor thread, which opens the link's device I/O and
    /// announces the stack (gratuitous ARP) once the link is up; returns
    /// once the link is open.
    public func start() {
        let started = Event()
        let thread = JoinableThread(name: "tapstack-exec") { [self] in run(started: started) }
        self.thread.withLock { $0 = thread }
        started.wait(timeoutMilliseconds: -1)
    }

    /// Stops and joins the executor (the link sends what is queued first).
    /// Sockets stay usable for cleanup.
    public func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        link.wake()
        let thread = self.thread.withLock { t in let taken = t; t = nil; return taken }
        thread?.join()
    }

    /// Opens the TAP device `interface` (creating it, or attaching to a
    /// persistent one) and starts the stack on it: the one call an
    /// application needs before opening sockets.
    /// - Throws: `TapError` explaining in one line why the device cannot be
    ///   used, or `ConfigurationError` when the configuration does not fit it.
    public static func start(interface: String, configuration: StackConfiguration = .standard,
                             capture: PacketCapture? = nil, options: ExecutorOptions = ExecutorOptions()) throws -> NetworkHost {
        let link = TapLink(device: try TapDevice(name: interface), capture: capture)
        let host = try NetworkHost(configuration: configuration, link: link, options: options)
        capture?.start()
        host.start()
        return host
    }

    // MARK: Entering the core

    /// Runs `body` with exclusive access to the core, then wakes the
    /// executor if it sleeps and `body` left it something to do. Any thread;
    /// do not block inside.
    public func withStack<R, E: Error>(_ body: (NetworkStack) throws(E) -> R) throws(E) -> R {
        lock.lock()
        defer { leaveStack() }
        return try body(stack)
    }

    /// Ends a `withStack`: unlocks, then wakes the executor if it sleeps and
    /// there is something for it (frames to send, a sooner timer, work).
    private func leaveStack() {
        let produced = sink.produced
        sink.produced = false
        let deadline = stack.nextDeadline?.nanoseconds ?? .max
        if deadline != nextDeadline.load(ordering: .relaxed) { nextDeadline.store(deadline, ordering: .sequentiallyConsistent) }
        lock.unlock()
        if sleeping.load(ordering: .sequentiallyConsistent)
            && (produced || deadline < sleepsUntil.load(ordering: .sequentiallyConsistent)
                || deferredPending.load(ordering: .sequentiallyConsistent)),
           sleeping.exchange(false, ordering: .sequentiallyConsistent) {
            link.wake()
        }
    }

    /// Queues `work` to run on the executor, outside the lock, after the
    /// frames being handled: for event-driven socket users, which call this
    /// from a readiness callback and then use the nonblocking calls. Call it
    /// only from inside the stack (a readiness callback or `withStack`).
    public func execute(_ work: @escaping () -> Void) {
        deferred.append(DeferredWork(run: work))
        deferredPending.store(true, ordering: .sequentiallyConsistent)
    }

    /// Queues `work` to run at the end of this turn: after the queued work
    /// and the sources, right before the link writes and sleeps. For work
    /// that pays once per turn (a doorbell toward another process that
    /// covers every datagram of the turn; rung as the executor is about to
    /// sleep, its wake-up does not preempt it). Executor thread only.
    public func executeAtEndOfTurn(_ work: @escaping () -> Void) {
        assert(isExecutorThread, "executeAtEndOfTurn is for the executor's thread")
        endOfTurn.append(DeferredWork(run: work))
    }

    /// Keeps the executor awake until `deadline` (monotonic ns) or
    /// `answerArrived()`, looking at `source` and the link on every turn
    /// instead of sleeping: for work that has just handed something to a
    /// producer that is awake and answers at once (a socket service's
    /// client that busy-polls its receive), whose answer then costs no
    /// wake-up of the executor. Not when the producer runs on the
    /// executor's CPU (`producerCPU`): waiting would only keep it from
    /// answering; nor for a source that is not registered (`addSource`), which
    /// the executor could not look at. Returns whether the executor waits.
    /// Executor thread only.
    @discardableResult
    public func awaitAnswer(from source: any ExecutorSource, until deadline: UInt64, producerCPU: Int32) -> Bool {
        assert(isExecutorThread, "awaitAnswer is for the executor's thread")
        guard producerCPU != csys_current_cpu(), sources.activate(source) else { return false }
        answerDue = max(answerDue, deadline)
        return true
    }

    /// Whether the executor waits for an answer (`awaitAnswer`). Executor thread only.
    public var isAwaitingAnswer: Bool { answerDue != 0 && answerDue > monotonicNanoseconds() }

    /// The awaited answer came (see `awaitAnswer`): the executor may sleep
    /// again. Returns whether it was still waiting (the answer came in
    /// time). Executor thread only.
    @discardableResult
    public func answerArrived() -> Bool {
        assert(isExecutorThread, "answerArrived is for the executor's thread")
        defer { answerDue = 0 }
        return answerDue != 0
    }

    /// Whether a source's `wakeDescriptor` wakes the executor (the link watches descriptors).
    public var watchesWakeDescriptors: Bool { link.watchesDescriptors }

    /// Has the executor look at `source` on every turn from its next turn on.
    public func addSource(_ source: any ExecutorSource) {
        registeredSources.withLock { $0.append(source) }
        sourcesChanged.store(true, ordering: .sequentiallyConsistent)
        link.wake()
    }

    /// Stops looking at `source`. The executor may be in a call to it while
    /// this returns, and may make one more; the source must tolerate that
    /// (its own lock says whether it still has anything). The executor lets
    /// its reference go on its next turn, after it stopped watching the
    /// source's descriptor.
    public func removeSource(_ source: any ExecutorSource) {
        registeredSources.withLock { $0.removeAll { $0 === source } }
        sourcesChanged.store(true, ordering: .sequentiallyConsistent)
        link.wake()  // so that the executor lets it go (and what it holds) now
    }

    /// Why the executor could not be pinned to `options.cpus` (nil when it was, or none were asked for).
    public var pinningFailureReason: String? { pinningFailure.withLock { $0 } }
    private let pinningFailure = Mutex<String?>(nil)

    /// The time for work in the stack: while the executor runs a turn, the
    /// turn's start (at most a turn ago), so that the sends and batches it
    /// runs, and those of threads meanwhile, read no clock; else the clock.
    /// The stack's timers take it as their present.
    public func now() -> StackInstant {
        let start = turnStart.load(ordering: .relaxed)
        return start != 0 ? StackInstant(nanoseconds: start) : monotonicNow()
    }

    /// True on the executor's own thread (where a blocking wait must run
    /// turns instead of sleeping: no one else would run the core or the link).
    public var isExecutorThread: Bool { executorThread.load(ordering: .relaxed) == csys_thread_id() }

    /// The stack's counters (a snapshot).
    public var counters: StackCounters { withStack { $0.counters } }

    // MARK: The executor

    private func run(started: Event) {
        if !options.cpus.isEmpty {
            let status = options.cpus.withUnsafeBufferPointer { cpus in
                cpus.map { Int32($0) }.withUnsafeBufferPointer { csys_pin_thread($0.baseAddress, Int32($0.count)) }
            }
            if status != 0 { pinningFailure.withLock { $0 = "cannot run the executor on CPUs \(options.cpus): \(String(cString: strerror(status)))" } }
        }
        executorThread.store(csys_thread_id(), ordering: .sequentiallyConsistent)
        if polling.isAdaptive { calibrateWakeUpCost() }
        link.open()
        started.signal()
        while !stopping.load(ordering: .relaxed) {
            turn(sleepUntil: .max)
        }
        turnStart.store(0, ordering: .relaxed)
        link.close()
    }

    /// One turn: the core takes what the link read, the timers due and the
    /// writable news; the work it queued runs; then the link's I/O turn,
    /// sleeping there (until `limit` at most) when nothing is left to do.
    /// Returns whether frames were handled.
    @discardableResult
    private func turn(sleepUntil limit: UInt64) -> Bool {
        let now = monotonicNow()
        if lastPollTurn != 0 {
            // The turn before polled: a long gap since means the poll lost its CPU.
            if now.nanoseconds &- lastPollTurn > IdlePolling.preemptionGap { pollLostCPU = true }
            lastPollTurn = 0
        }
        turnStart.store(now.nanoseconds, ordering: .relaxed)
        let reserve = 1 + configuration.transmitReserveFrames
        // Announce once the interface takes frames (RFC 5227 2.3: when the
        // link comes up); until then look again every 20 ms.
        var linkCheck = UInt64.max
        if !announced {
            if link.isUp {
                announced = true
                withStack { $0.start(now: now) }
            } else {
                linkCheck = now.nanoseconds &+ 20_000_000
            }
        }
        lock.lock()
        // Everything sent: the next frames go to the ring's first slots, still warm.
        link.rewindTransmitRing()
        if sink.waitingForRoom.load(ordering: .relaxed), tx.freeSlots >= reserve {
            sink.waitingForRoom.store(false, ordering: .relaxed)
            stack.notifyWritable()
        }
        let stack = self.stack
        let handled = link.receive(upTo: options.batchLimit) { frame, checksum in
            stack.receive(frame: frame, checksum: checksum, now: now)
        }
        let deadline = stack.advance(to: now)?.nanoseconds ?? .max
        nextDeadline.store(deadline, ordering: .relaxed)
        sink.produced = false
        lock.unlock()
        if handled > 0 { framesHandled.add(UInt64(handled), ordering: .relaxed) }
        runDeferred()
        let sourcesHadWork = pollSources()
        // An idle period that ended with work: what the poll window learns
        // from, once this turn's frames are on their way (below).
        var endedIdle: UInt64?
        if (handled > 0 || sourcesHadWork) && idleSince != 0 {
            endedIdle = now.nanoseconds &- idleSince
            idleSince = 0
        }
        if !endOfTurn.isEmpty { runEndOfTurn() }

        // Nothing left for the core: the link's turn sends what it produced
        // and sleeps in the same system call (a ping-pong's answer goes out
        // as the wait for the next frame begins).
        var wait: UInt64?
        let busy = !rx.isEmpty || deferredPending.load(ordering: .relaxed)
            || (sink.waitingForRoom.load(ordering: .relaxed) && !tx.isEmpty)
        // Out of work: the idle period starts (at this turn's start), and
        // the executor polls until the window has passed, then sleeps.
        if !busy && idleSince == 0 { idleSince = now.nanoseconds }
        if !busy && now.nanoseconds &- idleSince >= polling.window && !awaitingAnswer(now: now.nanoseconds) {
            let until = min(deadline, limit, linkCheck)
            sleepsUntil.store(until, ordering: .sequentiallyConsistent)
            sleeping.store(true, ordering: .sequentiallyConsistent)
            // Look again after announcing the sleep: work published before
            // this is seen here, work published after it wakes us.
            if deferredPending.load(ordering: .sequentiallyConsistent)
                || nextDeadline.load(ordering: .sequentiallyConsistent) < until
                || stopping.load(ordering: .sequentiallyConsistent)
                || sourcesHaveWork() {
                sleeping.store(false, ordering: .sequentiallyConsistent)
            } else {
                wait = until
                turnStart.store(0, ordering: .relaxed)
                idleTurns.add(1, ordering: .sequentiallyConsistent)
                if idleWatchers.load(ordering: .sequentiallyConsistent) > 0 { idleSignal.signal() }
            }
        } else if !busy {
            lastPollTurn = now.nanoseconds
        }
        link.exchange(waitUntil: wait, now: now.nanoseconds)
        if let wait {
            sleeping.store(false, ordering: .sequentiallyConsistent)
            if polling.isAdaptive && wait != .max && wait > now.nanoseconds &+ Self.shortestMeasuredSleep {
                // A sleep that outlasted its deadline: how long waking took.
                let woke = monotonicNanoseconds()
                if woke > wait { polling.measuredWakeUp(late: woke - wait); publishPolling() }
            }
        }
        if polling.isAdaptive && (endedIdle != nil || (lastPollTurn != 0 && preemptionsWhenPolling == .max)) {
            adaptPolling(endedIdle: endedIdle, pollingNow: lastPollTurn != 0)
        }
        if !sources.isEmpty { link.takeFiredDescriptors { sources.activate(descriptor: $0) } }
        return handled > 0
    }

    /// Whether an answer wait (`awaitAnswer`) keeps this turn from sleeping: until its deadline.
    private func awaitingAnswer(now: UInt64) -> Bool {
        guard answerDue != 0 else { return false }
        if now < answerDue { return true }
        answerDue = 0
        return false
    }

    /// After the exchange (so that the system call here does not delay the
    /// turn's frames): an idle period in which the executor polled and lost
    /// its CPU meanwhile (switched out, or a gap between poll turns) tells
    /// the window to stop polling for a while, once; one that ended
    /// otherwise moves it by its length. A poll that starts now notes the
    /// count to compare with.
    private func adaptPolling(endedIdle: UInt64?, pollingNow: Bool) {
        let preemptions = csys_thread_preemptions()
        if let endedIdle {
            if pollLostCPU || (preemptionsWhenPolling != .max && preemptions != preemptionsWhenPolling) {
                polling.preempted()
            } else {
                polling.idleEnded(after: endedIdle)
            }
            preemptionsWhenPolling = .max
            pollLostCPU = false
        }
        if pollingNow { preemptionsWhenPolling = preemptions }
        publishPolling()
    }

    /// A timed sleep shorter than this tells nothing of the wake-up cost (the turn's own time weighs in).
    static let shortestMeasuredSleep: UInt64 = 50_000

    /// Measures the wake-up cost before the executor starts (adaptive
    /// polling only): a few timed sleeps, exact to the nanosecond (timer
    /// slack 1 ns on this thread), and how late each ended. Later timed
    /// sleeps of the executor keep the estimate current.
    private func calibrateWakeUpCost() {
        _ = csys_set_timer_slack(1)
        for _ in 0..<Self.calibrationSleeps {
            let start = monotonicNanoseconds()
            var request = timespec(tv_sec: 0, tv_nsec: Int(Self.calibrationSleepNanoseconds))
            var remaining = timespec()
            _ = nanosleep(&request, &remaining)
            let slept = monotonicNanoseconds() &- start
            if slept > Self.calibrationSleepNanoseconds { polling.measuredWakeUp(late: slept - Self.calibrationSleepNanoseconds) }
        }
        publishPolling()
    }
    static let calibrationSleeps = 7
    static let calibrationSleepNanoseconds: UInt64 = 200_000

    private func publishPolling() {
        publishedWindow.store(polling.window, ordering: .relaxed)
        publishedLimit.store(polling.limit, ordering: .relaxed)
    }

    /// The executor's idle polling: the window it polls now before sleeping
    /// and, when adaptive, the most it may reach (two wake-ups as measured),
    /// in nanoseconds. Any thread.
    public var idlePollingState: (window: UInt64, limit: UInt64) {
        (publishedWindow.load(ordering: .relaxed), publishedLimit.load(ordering: .relaxed))
    }

    /// Lets the active sources take what is ready; true if any had something.
    private func pollSources() -> Bool {
        if sourcesChanged.load(ordering: .relaxed), sourcesChanged.exchange(false, ordering: .sequentiallyConsistent) {
            let registered = registeredSources.withLock { $0 }
            // The last reference to a removed source may go here, after its unwatch.
            sources.update(to: registered, watch: { link.watch($0) }, unwatch: { link.unwatch($0) })
        }
        return !sources.isEmpty && sources.poll()
    }

    /// Before sleeping: arms the active sources; true if one has work after all.
    private func sourcesHaveWork() -> Bool {
        (!sources.isEmpty && sources.prepareToSleep()) || sourcesChanged.load(ordering: .sequentiallyConsistent)
    }

    /// Runs the work queued with `execute` (also from a turn nested in one).
    private func runDeferred() {
        guard deferredPending.exchange(false, ordering: .sequentiallyConsistent) else { return }
        var work = spareDeferred.popLast() ?? []
        lock.lock()
        swap(&work, &deferred)
        lock.unlock()
        run(&work)
    }

    /// Runs `work`, then keeps the emptied array for the next swap (nested
    /// turns each take their own).
    private func run(_ work: inout [DeferredWork]) {
        for item in work { item.run() }
        work.removeAll(keepingCapacity: true)
        spareDeferred.append(work)
    }

    /// Runs `executeAtEndOfTurn`'s work, and what that work queued there.
    private func runEndOfTurn() {
        while !endOfTurn.isEmpty {
            var work = spareDeferred.popLast() ?? []
            swap(&work, &endOfTurn)
            run(&work)
        }
    }

    /// On the executor's thread, in place of a blocking wait: runs turns
    /// until `ready` is true or `deadline` (monotonic ns) passes. Returns
    /// whether `ready` became true.
    public func runTurns(until ready: () -> Bool, deadline: UInt64) -> Bool {
        precondition(isExecutorThread, "runTurns is for the executor's thread")
        while !ready() {
            guard monotonicNanoseconds() < deadline, !stopping.load(ordering: .relaxed) else { return false }
            turn(sleepUntil: deadline)
        }
        return true
    }

    // MARK: Hooks for tests

    /// Frames the core has handled so far.
    public var handledFrameCount: UInt64 { framesHandled.load(ordering: .relaxed) }

    /// Times the executor went to sleep with nothing left to do.
    public var idleTurnCount: UInt64 { idleTurns.load(ordering: .relaxed) }

    /// Waits until the executor, after this call, has gone to sleep with
    /// nothing left to do (every frame injected before the call handled, its
    /// work run). Returns false when `timeout` passed first.
    public func waitUntilIdle(timeout: Duration = .seconds(5)) -> Bool {
        let deadline = Deadline(timeout)
        idleWatchers.add(1, ordering: .sequentiallyConsistent)
        defer { idleWatchers.subtract(1, ordering: .sequentiallyConsistent) }
        let before = idleTurns.load(ordering: .sequentiallyConsistent)
        link.wake()
        while idleTurns.load(ordering: .sequentiallyConsistent) <= before {
            guard !deadline.hasPassed else { return false }
            idleSignal.wait(timeoutMilliseconds: min(deadline.pollTimeout < 0 ? 100 : deadline.pollTimeout, 100))
            idleSignal.reset()
        }
        return true
    }

    /// Waits until the core has handled `count` frames in all. Returns false
    /// when `timeout` passed first.
    public func waitUntilHandled(_ count: UInt64, timeout: Duration = .seconds(5)) -> Bool {
        let deadline = Deadline(timeout)
        while framesHandled.load(ordering: .relaxed) < count {
            guard !deadline.hasPassed else { return false }
            _ = waitUntilIdle(timeout: .milliseconds(100))
        }
        return true
    }
}
