import Glibc
import Link
import Synchronization
import Testing
import TestSupport
@testable import Sockets
@testable import Stack

/// What an event-driven socket user (like the echo service) saw.
private final class DrainTally: @unchecked Sendable {
    /// Guarded by the stack's lock (set in the callback, cleared in the work).
    var scheduled = false
    let running = Atomic<Bool>(false)
    let overlapped = Atomic<Int>(0)
    let drained = Atomic<Int>(0)
    let ranOnWireThread = Atomic<Int>(0)
    let wireThread = Atomic<UInt>(0)
}

/// Frames handled in the stack's role on the thread that brought them (the
/// TAP driver's thread in `tapstack run`) or on the stack thread.
@Suite(.serialized) struct HandOverTests {
    /// Deferred work queued from a readiness callback runs one at a time,
    /// never on two threads at once, and nothing queued is left behind,
    /// whichever thread holds the stack's role.
    @Test(arguments: [false, true])
    func deferredWorkRunsOneAtATimeAndDrainsEverything(handsOverOnInject: Bool) throws {
        let live = LiveHost(ringCapacity: 64, handsOverOnInject: handsOverOnInject)
        live.learnPeer()
        let host = live.host
        let socket = UDPSocket(host: host)
        try socket.bind(port: 7)
        let tally = DrainTally()
        @Sendable func drain() {
            host.withStack { _ in tally.scheduled = false }
            if tally.running.exchange(true, ordering: .sequentiallyConsistent) { tally.overlapped.add(1, ordering: .relaxed) }
            if UInt(pthread_self()) == tally.wireThread.load(ordering: .relaxed) { tally.ranOnWireThread.add(1, ordering: .relaxed) }
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
            tally.wireThread.store(UInt(pthread_self()), ordering: .relaxed)
            for sequence in 0..<total {
                let frame = FrameBuilder.udpFrame(destinationPort: 7, payload: [UInt8(truncatingIfNeeded: sequence)])
                while !link.inject(frame) { sched_yield() }
            }
        }
        wire.join()
        let deadline = ContinuousClock.now + .seconds(5)
        var dropped = 0
        while ContinuousClock.now < deadline {
            dropped = Int(host.counters[.udpDropQueueFull])
            if tally.drained.load(ordering: .relaxed) + dropped == total { break }
            usleep(1000)
        }
        #expect(tally.drained.load(ordering: .relaxed) + dropped == total)
        #expect(tally.overlapped.load(ordering: .relaxed) == 0)
        if handsOverOnInject {
            #expect(tally.ranOnWireThread.load(ordering: .relaxed) > 0, "the wire's thread took the stack's role")
        } else {
            #expect(tally.ranOnWireThread.load(ordering: .relaxed) == 0)
        }
    }

    /// A timer armed by a frame handled on the wire's thread still fires on
    /// time while the stack thread sleeps: a datagram to a closed port from
    /// an unknown peer makes the stack ask ARP for the peer (to send the
    /// ICMP error), and the request is retried after the retry interval.
    @Test func timersArmedOnTheWireThreadFireOnTime() throws {
        let live = LiveHost(handsOverOnInject: true) { $0.arpRetryInterval = .milliseconds(50) }
        // Let the stack thread fall asleep (its spin after work is 50 µs by default).
        usleep(50_000)
        live.link.inject(FrameBuilder.udpFrame(destinationPort: 9, payload: [1, 2, 3]))
        func isRequestForPeer(_ frame: [UInt8]?) -> Bool {
            guard let frame, frame.count >= 42, frame[12] == 0x08, frame[13] == 0x06 else { return false }
            return Array(frame[38..<42]) == [192, 0, 2, 1]
        }
        #expect(isRequestForPeer(live.link.nextTransmitted()))
        let start = ContinuousClock.now
        #expect(isRequestForPeer(live.link.nextTransmitted(timeoutMilliseconds: 2000)))
        // The stack thread sleeps up to a second when it knows of no timer.
        #expect(ContinuousClock.now - start < .milliseconds(600), "retried after \(ContinuousClock.now - start)")
    }
}
