import CTun

import Glibc

/// One step of a spin-wait loop: gives the CPU to another runnable thread if
/// there is one (on two cores the peer we wait for may need it), else a
/// CPU pause hint.
@inline(__always)
public func spinPause() {
    if spinYields { sched_yield() } else { for _ in 0..<8 { ctun_spin_pause() } }
}

/// One step of a spin-wait that has lasted `elapsed` nanoseconds: a few
/// microseconds of pure CPU pauses (an answer that quick is caught with no
/// system call at all), then yielding steps, so a thread that runs on the
/// same core as the one we wait for does not starve it.
@inline(__always)
public func spinPause(elapsed: UInt64) {
    if elapsed < spinPauseOnlyNanoseconds {
        for _ in 0..<8 { ctun_spin_pause() }
    } else {
        spinPause()
    }
}

/// Tuning knobs read once from the environment (for benchmarks).
public let spinYields = getenv("TAPSTACK_SPIN_YIELD").map { String(cString: $0) != "0" } ?? true
public let driverSpinNanoseconds = getenv("TAPSTACK_SPIN_DRIVER_NS").flatMap { UInt64(String(cString: $0)) } ?? 30_000
public let spinPauseOnlyNanoseconds = getenv("TAPSTACK_SPIN_PAUSE_NS").flatMap { UInt64(String(cString: $0)) } ?? 8_000
public let busyPollNanoseconds = getenv("TAPSTACK_BUSY_POLL_NS").flatMap { UInt64(String(cString: $0)) } ?? 50_000
public let stackSpinNanoseconds = getenv("TAPSTACK_SPIN_STACK_NS").flatMap { UInt64(String(cString: $0)) } ?? 50_000
