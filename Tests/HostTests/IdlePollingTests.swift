import Testing
@testable import Host

/// The executor's idle polling: how long it polls before sleeping, and how
/// the adaptive window follows the gaps and stays below a wake-up's cost.
@Suite struct IdlePollingTests {
    private static let microsecond: UInt64 = 1000

    @Test func sleepingNeverPolls() {
        var polling = IdlePolling(policy: .sleep)
        polling.idleEnded(after: 5 * Self.microsecond)
        polling.measuredWakeUp(late: 40 * Self.microsecond)
        #expect(polling.window == 0)
    }

    @Test func aFixedWindowDoesNotAdapt() {
        var polling = IdlePolling(policy: .poll(nanoseconds: 50 * Self.microsecond))
        polling.idleEnded(after: 10 * Self.microsecond)
        polling.idleEnded(after: 10_000 * Self.microsecond)
        polling.preempted()
        polling.idleEnded(after: 10 * Self.microsecond)
        polling.measuredWakeUp(late: 5 * Self.microsecond)
        #expect(polling.window == 50 * Self.microsecond)
    }

    /// Starts by sleeping; grows (from a quarter of the limit, doubling)
    /// while work comes within the limit (two wake-ups) of going idle but
    /// after the window; holds when the poll caught it; halves when it came
    /// later than the limit; below a quarter of the limit it stops polling.
    @Test func theAdaptiveWindowFollowsTheGapsBelowTheWakeUpCost() {
        let us = Self.microsecond
        var polling = IdlePolling(policy: .adaptive)
        #expect(polling.window == 0)
        polling.measuredWakeUp(late: 20 * us)
        #expect(polling.limit == 40 * us)  // two wake-ups
        #expect(polling.window == 0)

        polling.idleEnded(after: 8 * us)   // slept, and it came soon: poll
        #expect(polling.window == 10 * us)
        polling.idleEnded(after: 15 * us)  // beyond the window, within the limit
        #expect(polling.window == 20 * us)
        polling.idleEnded(after: 35 * us)
        #expect(polling.window == 40 * us)
        polling.idleEnded(after: 39 * us)  // caught by the poll: no change
        #expect(polling.window == 40 * us)

        polling.idleEnded(after: 500 * us)  // later than the limit: polling that long was waste
        #expect(polling.window == 20 * us)
        polling.idleEnded(after: 500 * us)
        #expect(polling.window == 10 * us)
        polling.idleEnded(after: 500 * us)
        #expect(polling.window == 0)
        polling.idleEnded(after: 1_000_000 * us)
        #expect(polling.window == 0)
    }

    /// A poll that lost its CPU stops polling at once, and the window does
    /// not grow again for 8 idle periods, then 16, 32 … while polls keep
    /// losing the CPU; a poll that catches its work keeping the CPU brings
    /// the pause back to 8.
    @Test func aPollThatLosesItsCPUPausesPollingLongerEachTime() {
        let us = Self.microsecond
        var polling = IdlePolling(policy: .adaptive)
        polling.measuredWakeUp(late: 20 * us)
        polling.idleEnded(after: 8 * us)
        #expect(polling.window == 10 * us)

        func idlePeriodsUntilItPollsAgain() -> Int {
            var periods = 0
            while polling.window == 0 && periods < 5000 { polling.idleEnded(after: 8 * us); periods += 1 }
            return periods
        }
        polling.preempted()
        #expect(polling.window == 0)
        #expect(idlePeriodsUntilItPollsAgain() == 9)  // 8 held off, the 9th grows it
        polling.preempted()
        #expect(idlePeriodsUntilItPollsAgain() == 17)
        polling.preempted()
        #expect(idlePeriodsUntilItPollsAgain() == 33)
        polling.idleEnded(after: 5 * us)  // caught, CPU kept
        polling.preempted()
        #expect(idlePeriodsUntilItPollsAgain() == 9)
        for _ in 0..<12 { polling.preempted() }
        #expect(polling.holdOff == IdlePolling.holdOffRange.upperBound)
    }

    @Test func theLimitIsTheMedianWakeUpWithinBounds() {
        let us = Self.microsecond
        var polling = IdlePolling(policy: .adaptive)
        for late in [30, 1000, 32, 31, 29] { polling.measuredWakeUp(late: UInt64(late) * us) }
        #expect(polling.limit == 62 * us)  // one slow outlier does not move it

        var fast = IdlePolling(policy: .adaptive)
        fast.measuredWakeUp(late: 1000)
        #expect(fast.limit == IdlePolling.limitRange.lowerBound)

        var overloaded = IdlePolling(policy: .adaptive)
        overloaded.measuredWakeUp(late: 5_000 * us)
        #expect(overloaded.limit == IdlePolling.limitRange.upperBound)
    }

    /// A window grown under a slow host shrinks with the limit when waking gets cheaper.
    @Test func theWindowNeverExceedsTheLimit() {
        let us = Self.microsecond
        var polling = IdlePolling(policy: .adaptive)
        polling.measuredWakeUp(late: 50 * us)
        for _ in 0..<3 { polling.idleEnded(after: 90 * us) }  // 25, 50, 100
        #expect(polling.window == 100 * us)
        for _ in 0..<WakeUpCost.sampleCount { polling.measuredWakeUp(late: 5 * us) }
        #expect(polling.limit == 10 * us)
        #expect(polling.window == 10 * us)
    }

    @Test func theWakeUpCostKeepsOnlyTheLatestSamples() {
        var cost = WakeUpCost()
        #expect(cost.estimate == nil)
        for _ in 0..<WakeUpCost.sampleCount { cost.add(50) }
        #expect(cost.estimate == 50)
        for _ in 0..<(WakeUpCost.sampleCount / 2 + 1) { cost.add(7) }
        #expect(cost.estimate == 7)
    }
}
