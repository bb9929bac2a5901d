import Testing
@testable import Link

@Suite struct TrafficPaceTests {
    /// Feeds `passes` passes of `frames` frames each; returns how many changed the verdict.
    private func feed(_ pace: inout TrafficPace, passes: UInt32, frames: Int) -> Int {
        var changes = 0
        for _ in 0..<passes where pace.record(framesMoved: frames) { changes += 1 }
        return changes
    }

    @Test func startsHeavySoTheFirstBurstGoesThroughIoUring() {
        #expect(!TrafficPace().isLight)
    }

    @Test func aPingPongIsLightAfterOneWindow() {
        var pace = TrafficPace()
        let early = feed(&pace, passes: TrafficPace.window - 1, frames: 1)
        #expect(early == 0)
        #expect(!pace.isLight)
        let last = pace.record(framesMoved: 1)
        #expect(last)
        #expect(pace.isLight)
    }

    @Test func passesThatMovedNothingDoNotCount() {
        var pace = TrafficPace()
        let idle = feed(&pace, passes: 10 * TrafficPace.window, frames: 0)
        #expect(idle == 0)
        #expect(!pace.isLight)
        let pingPong = feed(&pace, passes: TrafficPace.window, frames: 1)
        #expect(pingPong == 1)
        #expect(pace.isLight)
    }

    @Test func betweenTheThresholdsTheVerdictStays() {
        var light = TrafficPace()
        _ = feed(&light, passes: TrafficPace.window, frames: 1)
        // A read()/write() ping-pong moves 2 frames a pass; 3 is in the gap too.
        let twos = feed(&light, passes: 4 * TrafficPace.window, frames: 2)
        let threes = feed(&light, passes: 4 * TrafficPace.window, frames: 3)
        #expect(twos == 0 && threes == 0)
        #expect(light.isLight)

        var heavy = TrafficPace()
        let gap = feed(&heavy, passes: 4 * TrafficPace.window, frames: 3)
        #expect(gap == 0)
        #expect(!heavy.isLight)
    }

    @Test func loadMakesItHeavyAgainAfterOneWindow() {
        var pace = TrafficPace()
        _ = feed(&pace, passes: TrafficPace.window, frames: 1)
        let burst = feed(&pace, passes: TrafficPace.window, frames: 64)
        #expect(burst == 1)
        #expect(!pace.isLight)
    }

    @Test func oneSmallPassInABusyWindowDoesNotFlipIt() {
        var pace = TrafficPace()
        _ = feed(&pace, passes: TrafficPace.window - 1, frames: 20)
        let changed = pace.record(framesMoved: 1)
        #expect(!changed)
        #expect(!pace.isLight)
    }
}
