// When the executor runs out of work it either sleeps at once (a wake-up
// later), or polls a while first: a frame that comes while it polls is
// handled without a wake-up, at the price of the CPU it spun. The adaptive
// policy is spin-then-block with the spin bounded by what waking costs on
// this host (measured): at most two wake-ups, the time a peer on the same
// host takes to wake and answer (a conversation's next frame). Where waking
// is cheap it hardly polls; where a wake-up exits to the hypervisor (tens of
// µs) it polls long enough to save one per frame. Within that bound its
// window follows the gaps the traffic leaves (the rule of Linux's
// cpuidle-haltpoll governor): longer when work came soon after the
// executor slept, shorter when it came later than the bound. A poll that
// lost its CPU (the scheduler gave it to another thread, or the hypervisor
// took it) stops polling for a while, longer each time it happens again:
// where the peer shares the executor's CPU, a wake-up is a cheap switch and
// polling only keeps the peer from running.

/// What the executor does when it runs out of work.
public enum IdlePolicy: Sendable, Equatable {
    /// Sleeps at once: no CPU spent idle, a wake-up per frame that finds it asleep.
    case sleep
    /// Polls this many nanoseconds after the last work, then sleeps.
    case poll(nanoseconds: UInt64)
    /// Polls for a window that adapts to the traffic's gaps, never longer
    /// than two wake-ups as measured on this host (see `IdlePolling`).
    case adaptive
}

/// The executor's idle polling state; executor thread only.
struct IdlePolling {
    /// The first adaptive window is this fraction of the limit.
    static let growStartDivisor: UInt64 = 4
    /// A poll turn that began this much later than the one before lost its CPU meanwhile.
    static let preemptionGap: UInt64 = 25_000
    /// Idle periods without polling after a poll lost its CPU, doubling
    /// while polls keep losing it, back to the first once one is not.
    static let holdOffRange: ClosedRange<UInt32> = 8...1024
    /// The adaptive limit in wake-ups: a peer's wake-up and as much again for its answer.
    static let wakeUpsPolled: UInt64 = 2
    /// Bounds of the adaptive limit: below the first, polling saves too
    /// little to pay; above the second, the host is overloaded.
    static let limitRange: ClosedRange<UInt64> = 4_000...200_000

    let policy: IdlePolicy
    /// How long to poll (ns) before sleeping, counted from the start of the idle period.
    private(set) var window: UInt64
    /// The most the adaptive window may reach (ns): two measured wake-ups, bounded.
    private(set) var limit: UInt64
    private(set) var wakeUpCost = WakeUpCost()
    /// Idle periods left before the window may grow again.
    private(set) var holdOff: UInt32 = 0
    private var nextHoldOff = IdlePolling.holdOffRange.lowerBound

    init(policy: IdlePolicy) {
        self.policy = policy
        switch policy {
        case .sleep: window = 0; limit = 0
        case .poll(let nanoseconds): window = nanoseconds; limit = nanoseconds
        case .adaptive: window = 0; limit = Self.limitRange.lowerBound
        }
    }

    var isAdaptive: Bool { policy == .adaptive }

    /// An idle period of `idle` ns ended with work (a frame, a datagram from a source).
    mutating func idleEnded(after idle: UInt64) {
        guard isAdaptive else { return }
        if idle <= window {
            // The poll caught it and kept its CPU: polling works here.
            nextHoldOff = Self.holdOffRange.lowerBound
            return
        }
        if holdOff > 0 {
            holdOff -= 1
            if idle > limit { shrink() }
            return
        }
        if idle <= limit {
            // Polling longer would have caught it: grow.
            window = min(max(window &* 2, limit / Self.growStartDivisor), limit)
        } else if idle > limit {
            // It came later than a wake-up's worth: polling that long is waste.
            shrink()
        }
    }

    /// The poll lost its CPU (the scheduler switched the executor out while
    /// it polled, or a gap between its turns longer than `preemptionGap`):
    /// no polling for the next `holdOff` idle periods.
    mutating func preempted() {
        guard isAdaptive else { return }
        window = 0
        holdOff = nextHoldOff
        nextHoldOff = min(nextHoldOff &* 2, Self.holdOffRange.upperBound)
    }

    /// A sleep ended `late` ns after its deadline: a sample of the wake-up cost.
    mutating func measuredWakeUp(late: UInt64) {
        guard isAdaptive else { return }
        wakeUpCost.add(late)
        if let estimate = wakeUpCost.estimate {
            limit = min(max(estimate &* Self.wakeUpsPolled, Self.limitRange.lowerBound), Self.limitRange.upperBound)
            window = min(window, limit)
        }
    }

    private mutating func shrink() {
        window /= 2
        if window < limit / Self.growStartDivisor { window = 0 }
    }
}

/// The cost of a wake-up on this host: how late a timed sleep ends (timer
/// slack set to 1 ns), the median of the last samples. On a VM whose idle
/// vCPU halts, this is the exit to the hypervisor and back (tens of µs on
/// some hosts, a few on others).
struct WakeUpCost {
    static let sampleCount = 15
    private var samples = [UInt64](repeating: 0, count: WakeUpCost.sampleCount)
    private var taken = 0
    /// The median of the samples so far, nil before the first.
    private(set) var estimate: UInt64?

    mutating func add(_ sample: UInt64) {
        samples[taken % Self.sampleCount] = sample
        taken += 1
        let sorted = samples.prefix(min(taken, Self.sampleCount)).sorted()
        estimate = sorted[sorted.count / 2]
    }
}
