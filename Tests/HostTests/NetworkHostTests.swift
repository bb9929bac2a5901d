import Glibc
import Link
import SocketAPI
import Sockets
import Synchronization
import Testing
import TestSupport
@testable import Host
@testable import Stack
import Wire

/// A host over a memory link, the test playing the wire.
private final class Live {
    let link: MemoryLink
    let host: NetworkHost

    init(ringCapacity: Int = 256, options: ExecutorOptions = ExecutorOptions(),
         configure: (inout StackConfiguration) -> Void = { _ in }) {
        link = MemoryLink(capacity: ringCapacity)
        var configuration = StackConfiguration.standard
        configure(&configuration)
        host = try! NetworkHost(configuration: configuration, link: link, options: options)
        host.start()
        _ = link.nextTransmitted()  // the gratuitous ARP
    }

    deinit { host.stop() }

    func learnPeer() {
        link.inject(FrameBuilder.arp(.request))
        _ = link.nextTransmitted()
    }
}

/// What an event-driven socket user (like the echo service) saw.
private final class DrainTally: @unchecked Sendable {
    /// Guarded by the stack's lock (set in the callback, cleared in the work).
    var scheduled = false
    let running = Atomic<Bool>(false)
    let overlapped = Atomic<Int>(0)
    let drained = Atomic<Int>(0)
    let ranElsewhere = Atomic<Int>(0)
}

@Suite(.serialized) struct NetworkHostTests {
    /// Work queued from a readiness callback runs on the executor, one at a
    /// time, and nothing queued is left behind.
    @Test func deferredWorkRunsOnTheExecutorOneAtATimeAndDrainsEverything() throws {
        let live = Live(ringCapacity: 64)
        live.learnPeer()
        let host = live.host
        let socket = UDPSocket(host: host)
        try socket.bind(port: 7)
        let tally = DrainTally()
        @Sendable func drain() {
            host.withStack { _ in tally.scheduled = false }
            if tally.running.exchange(true, ordering: .sequentiallyConsistent) { tally.overlapped.add(1, ordering: .relaxed) }
            if !host.isExecutorThread { tally.ranElsewhere.add(1, ordering: .relaxed) }
            while (try? socket.receive()) != nil { tally.drained.add(1, ordering: .relaxed) }
            tally.running.store(false, ordering: .sequentiallyConsistent)
        }
        _ = socket.addReadinessCallback(.readable) { _ in
            guard !tally.scheduled else { return }
            tally.scheduled = true
            host.execute { drain() }
        }
        let total = 5000
        let link = live.link
        let wire = JoinableThread(name: "wire") {
            for sequence in 0..<total {
                let frame = FrameBuilder.udpFrame(destinationPort: 7, payload: [UInt8(truncatingIfNeeded: sequence)])
                while !link.inject(frame) { sched_yield() }
            }
        }
        wire.join()
        #expect(host.waitUntilHandled(UInt64(total) + 1))
        #expect(host.waitUntilIdle())
        let dropped = Int(host.counters[.udpDropQueueFull])
        #expect(tally.drained.load(ordering: .relaxed) + dropped == total)
        #expect(tally.overlapped.load(ordering: .relaxed) == 0)
        #expect(tally.ranElsewhere.load(ordering: .relaxed) == 0)
    }

    /// Work queued for the end of the turn runs on the executor after the
    /// turn's queued work, in order, once each; what it queues there runs
    /// too, before the executor sleeps.
    @Test func endOfTurnWorkRunsAfterTheTurnsWorkAndBeforeTheSleep() throws {
        let live = Live()
        let host = live.host
        let socket = UDPSocket(host: host)
        try socket.bind(port: 7)
        let log = Mutex<[String]>([])
        _ = socket.addReadinessCallback(.readable) { _ in
            host.execute {
                while (try? socket.receive()) != nil { log.withLock { $0.append("received") } }
                host.executeAtEndOfTurn {
                    log.withLock { $0.append("first, on the executor: \(host.isExecutorThread)") }
                    host.executeAtEndOfTurn { log.withLock { $0.append("queued by the first") } }
                }
                host.executeAtEndOfTurn { log.withLock { $0.append("second") } }
            }
        }
        live.link.inject(Captured.udpRequest)
        #expect(host.waitUntilIdle())
        #expect(log.withLock { $0 } == ["received", "first, on the executor: true", "second", "queued by the first"])
    }

    /// Inside a turn the stack's time is the turn's start, read once (work
    /// the executor runs reads no clock); while it sleeps, `now()` is the clock.
    @Test func theTimeInsideATurnIsTheTurnsStart() throws {
        let live = Live()
        let host = live.host
        let socket = UDPSocket(host: host)
        try socket.bind(port: 7)
        let seen = Mutex<[UInt64]>([])
        _ = socket.addReadinessCallback(.readable) { _ in
            host.execute {
                let first = host.now().nanoseconds
                let spinUntil = monotonicNanoseconds() + 2_000_000
                while monotonicNanoseconds() < spinUntil {}
                seen.withLock { $0 = [first, host.now().nanoseconds, monotonicNanoseconds()] }
            }
        }
        let before = monotonicNanoseconds()
        live.link.inject(Captured.udpRequest)
        #expect(host.waitUntilIdle())
        let times = seen.withLock { $0 }
        try #require(times.count == 3)
        #expect(times[0] == times[1] && times[0] >= before)  // the same, 2 ms apart
        #expect(times[2] - times[1] >= 2_000_000)
        // Asleep: the clock.
        let asleep = host.now().nanoseconds
        #expect(asleep > times[2])
    }

    /// Readiness for frames from the link is delivered by the executor
    /// itself, in the turn that handled the frame: no thread hop.
    @Test func readableIsDeliveredOnTheExecutor() throws {
        let live = Live()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        let onExecutor = Atomic<Int>(0)
        let elsewhere = Atomic<Int>(0)
        let host = live.host
        _ = socket.addReadinessCallback(.readable) { _ in
            if host.isExecutorThread { onExecutor.add(1, ordering: .relaxed) } else { elsewhere.add(1, ordering: .relaxed) }
        }
        live.link.inject(Captured.udpRequest)
        #expect(live.host.waitUntilIdle())
        #expect(onExecutor.load(ordering: .relaxed) == 1)
        #expect(elsewhere.load(ordering: .relaxed) == 0)
    }

    /// A timer another thread arms while the executor sleeps (a send to an
    /// unknown peer starts ARP) wakes it on time: the ARP request is retried
    /// after the retry interval, not after the executor's next look.
    @Test func aTimerArmedByAnotherThreadWakesTheSleepingExecutor() throws {
        let live = Live { $0.arpRetryInterval = .milliseconds(50); $0.arpAnnouncements = 1 }
        #expect(live.host.waitUntilIdle())
        let socket = UDPSocket(host: live.host)
        try socket.send([1, 2, 3], to: SocketAddress(IPv4Address(192, 0, 2, 77), 9))
        func isRequest(_ frame: [UInt8]?) -> Bool {
            guard let frame, frame.count >= 42, frame[12] == 0x08, frame[13] == 0x06 else { return false }
            return Array(frame[38..<42]) == [192, 0, 2, 77]
        }
        #expect(isRequest(live.link.nextTransmitted()))
        let start = ContinuousClock.now
        #expect(isRequest(live.link.nextTransmitted(timeoutMilliseconds: 2000)))
        // With no timer known the executor sleeps until woken; the retry came from the timer.
        #expect(ContinuousClock.now - start < .milliseconds(1000), "retried after \(ContinuousClock.now - start)")
    }

    /// Deferred work that blocks on a full link (a send waiting for
    /// `.writable`) runs executor turns meanwhile instead of sleeping, so
    /// the link keeps draining and the send completes: the executor is the
    /// only thread that would have drained it.
    @Test func deferredWorkWaitingForRoomDoesNotDeadlockTheExecutor() throws {
        let live = Live(ringCapacity: 8) { $0.transmitReserveFrames = 0 }
        live.learnPeer()
        let host = live.host
        let socket = UDPSocket(host: host)
        try socket.bind(port: 5000)
        let sent = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        let finished = Event()
        host.withStack { _ in
            host.execute {
                for index in 0..<40 {
                    do {
                        try socket.send([UInt8(index)], to: SocketAddress(FrameBuilder.peerIP, 9), timeout: .seconds(10))
                        sent.add(1, ordering: .relaxed)
                    } catch {
                        failed.add(1, ordering: .relaxed)
                    }
                }
                finished.signal()
            }
        }
        // The wire takes frames as they come; the ring holds 8.
        var taken = 0
        let deadline = Deadline(.seconds(20))
        while taken < 40 && !deadline.hasPassed {
            if live.link.nextTransmitted(timeoutMilliseconds: 100) != nil { taken += 1 }
        }
        #expect(finished.wait(timeoutMilliseconds: 10_000))
        #expect(sent.load(ordering: .relaxed) == 40)
        #expect(failed.load(ordering: .relaxed) == 0)
        #expect(taken == 40)
    }

    /// An idle executor sleeps: while nothing happens it makes at most a
    /// few turns (timers), it does not poll.
    @Test func anIdleExecutorSleeps() throws {
        let live = Live { $0.arpAnnouncements = 1 }
        #expect(live.host.waitUntilIdle())
        let before = live.host.idleTurnCount
        usleep(200_000)
        #expect(live.host.idleTurnCount - before <= 2)
    }

    /// A polling executor takes frames that come while it polls without
    /// going to sleep (no wake-up needed), and sleeps once its window passed.
    @Test func aPollingExecutorTakesFramesWithoutSleeping() throws {
        let live = Live(options: ExecutorOptions(idlePolicy: .poll(nanoseconds: 3_000_000_000))) { $0.arpAnnouncements = 1 }
        let sleptBefore = live.host.idleTurnCount
        let handledBefore = live.host.handledFrameCount
        for index in 0..<20 { live.link.inject(FrameBuilder.udpFrame(destinationPort: 9, payload: [UInt8(index)])) }
        let deadline = ContinuousClock.now + .seconds(2)
        while live.host.handledFrameCount < handledBefore + 20 && ContinuousClock.now < deadline { sched_yield() }
        #expect(live.host.handledFrameCount == handledBefore + 20)
        #expect(live.host.idleTurnCount == sleptBefore, "the executor slept while it should poll")
        #expect(live.host.waitUntilIdle(timeout: .seconds(10)), "it never slept after its window")
    }

    /// The adaptive executor measures what a wake-up costs before it starts
    /// (its window's bound), starts out sleeping, and sleeps again once
    /// traffic stops.
    @Test func anAdaptiveExecutorMeasuresAWakeUpAndSleepsWhenIdle() throws {
        let live = Live(options: ExecutorOptions(idlePolicy: .adaptive)) { $0.arpAnnouncements = 1 }
        #expect(IdlePolling.limitRange.contains(live.host.idlePollingState.limit))
        #expect(live.host.waitUntilIdle())
        let before = live.host.handledFrameCount
        for index in 0..<200 { live.link.inject(FrameBuilder.udpFrame(destinationPort: 9, payload: [UInt8(truncatingIfNeeded: index)])) }
        #expect(live.host.waitUntilHandled(before + 200))
        #expect(live.host.waitUntilIdle())
        #expect(live.host.idlePollingState.window <= live.host.idlePollingState.limit)
    }

    /// `waitUntilIdle` returns only once the frames injected before it are handled.
    @Test func waitUntilIdleMeansEverythingInjectedWasHandled() throws {
        let live = Live(ringCapacity: 1024)
        let before = live.host.handledFrameCount
        for index in 0..<500 { live.link.inject(FrameBuilder.udpFrame(destinationPort: 9, payload: [UInt8(truncatingIfNeeded: index)])) }
        #expect(live.host.waitUntilIdle())
        #expect(live.host.handledFrameCount - before == 500)
    }

    /// The stack announces itself (gratuitous ARP) only once the link is up:
    /// a TAP device refuses frames while its kernel side is down, and the
    /// first announcement used to fail there (counted as a link error on
    /// every clean start).
    @Test func theAnnouncementWaitsForTheLinkToComeUp() throws {
        let link = MemoryLink()
        link.up.store(false, ordering: .sequentiallyConsistent)
        let host = try NetworkHost(configuration: .standard, link: link)
        host.start()
        defer { host.stop() }
        #expect(host.waitUntilIdle())
        #expect(link.nextTransmitted(timeoutMilliseconds: 100) == nil, "nothing sent while the link is down")
        link.up.store(true, ordering: .sequentiallyConsistent)
        let frame = try #require(link.nextTransmitted(timeoutMilliseconds: 2000))
        #expect(frame[12] == 0x08 && frame[13] == 0x06 && Array(frame[38..<42]) == [192, 0, 2, 2], "a gratuitous ARP")
        #expect(host.counters[.arpTxRequests] == 1)
    }

    /// A source's producer that finds it armed rings its descriptor, which
    /// the link watches: the sleeping executor wakes and takes the work,
    /// with no other thread in between, every time.
    @Test func aSourceWakesTheSleepingExecutorThroughItsDescriptor() throws {
        let live = Live()
        let source = CountingSource()
        live.host.addSource(source)
        for round in 1...20 {
            #expect(live.host.waitUntilIdle())
            let armed = source.armed.load(ordering: .sequentiallyConsistent)
            #expect(armed, "armed before the executor slept")
            source.produce()
            #expect(eventually { source.taken.load(ordering: .sequentiallyConsistent) == round })
        }
        #expect(source.rang.load(ordering: .relaxed) == 20)
        // Armed and idle, it is not looked at while other traffic keeps the executor busy.
        #expect(live.host.waitUntilIdle())
        let polls = source.polls.load(ordering: .relaxed)
        let handled = live.host.handledFrameCount
        for index in 0..<50 { live.link.inject(FrameBuilder.udpFrame(destinationPort: 9, payload: [UInt8(index)])) }
        #expect(live.host.waitUntilHandled(handled + 50))
        #expect(source.polls.load(ordering: .relaxed) == polls)
    }

    /// An executor awaiting an answer from a source (a busy-polling client
    /// of the socket service) looks at it on every turn without sleeping,
    /// so work the source's producer publishes without ringing is taken;
    /// once the answer came it sleeps again.
    @Test func anExecutorAwaitingAnAnswerLooksForItWithoutSleeping() throws {
        let live = Live(options: ExecutorOptions(cpus: [0]))
        let source = CountingSource()
        live.host.addSource(source)
        #expect(live.host.waitUntilIdle())  // the source armed and left alone
        let host = live.host
        let waiting = Atomic<Bool>(false)
        host.withStack { _ in
            host.execute {
                // Pinned to CPU 0: a producer there is not waited for, nor a source it cannot look at.
                let sameCPU = host.awaitAnswer(from: source, until: monotonicNanoseconds() + 10_000_000_000, producerCPU: 0)
                let unregistered = host.awaitAnswer(from: CountingSource(), until: monotonicNanoseconds() + 10_000_000_000, producerCPU: -1)
                waiting.store(!sameCPU && !unregistered && !host.isAwaitingAnswer
                              && host.awaitAnswer(from: source, until: monotonicNanoseconds() + 10_000_000_000, producerCPU: -1)
                              && host.isAwaitingAnswer, ordering: .sequentiallyConsistent)
            }
        }
        let waits = eventually { waiting.load(ordering: .sequentiallyConsistent) }
        #expect(waits, "awaits a registered producer on another CPU, not one on its own CPU or unregistered")
        let slept = host.idleTurnCount
        let polls = source.polls.load(ordering: .relaxed)
        #expect(eventually { source.polls.load(ordering: .relaxed) > polls + 100 }, "looked at on every turn")
        source.pending.add(1, ordering: .sequentiallyConsistent)  // published without ringing
        #expect(eventually { source.taken.load(ordering: .sequentiallyConsistent) == 1 })
        #expect(source.rang.load(ordering: .relaxed) == 0)
        #expect(host.idleTurnCount == slept, "the executor slept while awaiting the answer")
        let inTime = Atomic<Bool>(false)
        host.withStack { _ in host.execute { inTime.store(host.answerArrived(), ordering: .sequentiallyConsistent) } }
        #expect(host.waitUntilIdle(), "it sleeps once the answer came")
        let answeredInTime = inTime.load(ordering: .sequentiallyConsistent)
        #expect(answeredInTime)
    }

    /// An answer that does not come ends the wait at its deadline: the executor sleeps then.
    @Test func anUnansweredWaitEndsAtItsDeadline() throws {
        let live = Live()
        let source = CountingSource()
        live.host.addSource(source)
        #expect(live.host.waitUntilIdle())
        let host = live.host
        let began = Atomic<UInt64>(0)
        host.withStack { _ in
            host.execute {
                began.store(monotonicNanoseconds(), ordering: .sequentiallyConsistent)
                host.awaitAnswer(from: source, until: monotonicNanoseconds() + 50_000_000, producerCPU: -1)
            }
        }
        let started = eventually { began.load(ordering: .sequentiallyConsistent) != 0 }
        #expect(started)
        #expect(host.waitUntilIdle())
        let waited = monotonicNanoseconds() - began.load(ordering: .sequentiallyConsistent)
        #expect(waited >= 50_000_000, "slept before the deadline")
        let inTime = Atomic<Bool>(true)
        host.withStack { _ in host.execute { inTime.store(host.answerArrived(), ordering: .sequentiallyConsistent) } }
        let late = eventually { !inTime.load(ordering: .sequentiallyConsistent) }
        #expect(late, "an answer after the deadline was not in time")
    }

    /// A removed source is not looked at again (after the turn that was running).
    @Test func aRemovedSourceIsNotPolledAgain() throws {
        let live = Live()
        let source = CountingSource()
        live.host.addSource(source)
        #expect(eventually { source.polls.load(ordering: .relaxed) > 0 })
        live.host.removeSource(source)
        live.link.wake()
        #expect(live.host.waitUntilIdle())
        let polls = source.polls.load(ordering: .relaxed)
        let handled = live.host.handledFrameCount
        live.link.inject(FrameBuilder.udpFrame(destinationPort: 9, payload: [1]))
        #expect(live.host.waitUntilHandled(handled + 1))
        #expect(live.host.waitUntilIdle())
        #expect(source.polls.load(ordering: .relaxed) == polls)
    }
}

/// Work that arrives outside the link, as a client's ring does: `produce`
/// publishes an item and rings the eventfd when the executor asked for it.
private final class CountingSource: ExecutorSource, @unchecked Sendable {
    let pending = Atomic<Int>(0)
    let taken = Atomic<Int>(0)
    let polls = Atomic<Int>(0)
    let armed = Atomic<Bool>(false)
    let rang = Atomic<Int>(0)
    private let doorbell = Wakeup()
    var wakeDescriptor: Int32 { doorbell.fd }

    func poll() -> Bool {
        polls.add(1, ordering: .relaxed)
        armed.store(false, ordering: .sequentiallyConsistent)
        let count = pending.exchange(0, ordering: .sequentiallyConsistent)
        taken.add(count, ordering: .sequentiallyConsistent)
        return count > 0
    }

    func prepareToSleep() -> Bool {
        armed.store(true, ordering: .sequentiallyConsistent)
        return pending.load(ordering: .sequentiallyConsistent) > 0
    }

    func produce() {
        pending.add(1, ordering: .sequentiallyConsistent)
        if armed.exchange(false, ordering: .sequentiallyConsistent) {
            rang.add(1, ordering: .relaxed)
            doorbell.forceSignal()
        }
    }
}
