import Glibc

/// Waits until `condition` holds (checking every millisecond) or `seconds`
/// pass; returns whether it held. For state another thread reaches on its
/// own schedule, such as a counter updated after the effect a test saw.
public func eventually(within seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let deadline = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 + seconds
    while !condition() {
        clock_gettime(CLOCK_MONOTONIC, &now)
        if Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 > deadline { return false }
        usleep(1000)
    }
    return true
}
