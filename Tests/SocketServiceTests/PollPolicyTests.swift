import CTapstackChannel
import Testing

/// The adaptive busy poll's rules (tapstack_poll_policy.h), driven with a
/// clock of our own: a limit of 40 µs and wake-ups of 5 µs.
@Suite struct PollPolicyTests {
    static let limit: Int64 = 40_000
    static let wakeUp: Int64 = 5_000

    /// A policy and its clock.
    struct Driven {
        var policy = tsc_poll_policy()
        var now: Int64 = 1_000_000

        /// A wait begins: the window it polls.
        mutating func begin() -> Int64 { tsc_poll_policy_begin(&policy, now, PollPolicyTests.limit) }

        /// A wait that found nothing in its poll slept, and what it waited
        /// for came `idle` ns after the wait began, counted as the rules
        /// count it (less the two wake-ups a poll would have saved).
        mutating func slept(idle: Int64) {
            now += idle + 2 * PollPolicyTests.wakeUp
            tsc_poll_policy_slept(&policy, now, PollPolicyTests.limit, PollPolicyTests.wakeUp)
            now += 1_000
        }
    }

    @Test func theFirstWaitProbesTheWholeLimit() {
        var driven = Driven()
        #expect(driven.begin() == Self.limit)
        #expect(driven.policy.probe_in == UInt32(TSC_POLL_PROBE_INTERVAL))
    }

    /// Gaps within the limit grow the window from a quarter of the limit,
    /// doubling, up to the limit.
    @Test func gapsWithinTheLimitGrowTheWindow() {
        var driven = Driven()
        _ = driven.begin()  // the first wait's probe, which found nothing
        driven.slept(idle: 30_000)
        var windows: [Int64] = []
        for _ in 0..<4 {
            windows.append(driven.begin())
            driven.slept(idle: 30_000)
        }
        #expect(windows == [10_000, 20_000, 40_000, 40_000])
    }

    /// Gaps beyond the limit halve it, and below a quarter of the limit there is none.
    @Test func gapsBeyondTheLimitShrinkTheWindow() {
        var driven = Driven()
        driven.policy.window_ns = 40_000
        driven.policy.probe_in = UInt32(TSC_POLL_PROBE_INTERVAL)  // (a probe would poll the limit)
        var windows: [Int64] = []
        for _ in 0..<4 {
            windows.append(driven.begin())
            driven.slept(idle: 100_000)
        }
        #expect(windows == [40_000, 20_000, 10_000, 0])
        #expect(driven.policy.window_ns == 0)
    }

    /// After more than two datagrams taken since the last wait, a wait
    /// sleeps at once (a stream), and so do the 7 after it whatever they
    /// took; their sleeps do not move the window, kept for when the
    /// conversation resumes.
    @Test func aStreamSleepsAndKeepsTheWindow() {
        var driven = Driven()
        driven.policy.window_ns = 20_000
        for _ in 0...TSC_POLL_STREAM_BATCH { tsc_poll_policy_took(&driven.policy) }
        var windows: [Int64] = []
        for _ in 0..<TSC_POLL_STREAM_WAITS {
            windows.append(driven.begin())
            driven.slept(idle: 500_000)
            tsc_poll_policy_took(&driven.policy)  // one datagram between waits: a conversation's share
        }
        #expect(windows == Array(repeating: 0, count: Int(TSC_POLL_STREAM_WAITS)))
        #expect(driven.policy.window_ns == 20_000)
        #expect(driven.begin() == 20_000)
        // Two datagrams between waits: a conversation still.
        tsc_poll_policy_took(&driven.policy)
        tsc_poll_policy_took(&driven.policy)
        #expect(driven.begin() == 20_000)
    }

    /// Without a window, every 33rd wait polls the whole limit; one that
    /// catches a datagram makes the limit the window.
    @Test func probesComeEvery32WaitsWithoutAWindow() {
        var driven = Driven()
        #expect(driven.begin() == Self.limit)  // the first
        driven.slept(idle: 10 * Self.limit)
        var waitsBetween = 0
        while driven.begin() == 0 {
            waitsBetween += 1
            driven.slept(idle: 10 * Self.limit)
            if waitsBetween > 100 { break }
        }
        #expect(waitsBetween == Int(TSC_POLL_PROBE_INTERVAL))
        tsc_poll_policy_caught(&driven.policy, Self.limit)
        #expect(driven.begin() == Self.limit)
    }

    /// The limit is four measured wake-ups, within 4-200 µs.
    @Test func theLimitIsBounded() {
        let limit = tsc_adaptive_poll_limit()
        #expect((4_000...200_000).contains(limit))
        #expect(tsc_adaptive_poll_limit() == limit)  // measured once
    }

    /// A wait after TSC_POLL_JOIN_BATCH or more datagrams taken since the
    /// last (a dense stream) sleeps on the executor's CPU; one after fewer,
    /// in a stream or not, sleeps where it is.
    @Test func aWaitAfterALargeBatchSleepsWithTheExecutor() {
        var driven = Driven()
        _ = driven.begin()  // the first wait's probe
        var joins: [Bool] = []
        for batch in [1, 3, Int(TSC_POLL_JOIN_BATCH) - 1, Int(TSC_POLL_JOIN_BATCH), 40, 2, 0] {
            for _ in 0..<batch { tsc_poll_policy_took(&driven.policy) }
            let window = driven.begin()
            if batch > TSC_POLL_STREAM_BATCH { #expect(window == 0, "a stream's wait sleeps at once") }
            joins.append(tsc_poll_policy_sleeps_with_executor(&driven.policy) != 0)
            driven.slept(idle: 1_000_000)
        }
        #expect(joins == [false, false, false, true, true, false, false])
    }
}
