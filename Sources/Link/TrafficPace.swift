import Glibc

/// Whether the link's traffic is light enough that plain `read()`/`write()`
/// beat io_uring batches, judged over windows of the driver's passes.
///
/// A ping-pong moves one frame per io_uring submission, and each submission
/// carries an empty read besides: two system calls per frame either way, but
/// the io_uring ones cost more (measured pinned beside the peer: ping-pong p50
/// 17–18 µs through io_uring, 15–16 µs through read()/write()). Under load a
/// submission carries many frames and io_uring wins. The decision is made per
/// window of passes that moved frames, with a gap between the two thresholds,
/// so one small batch in a busy stream does not flip the mode.
struct TrafficPace {
    /// Passes that moved frames, per decision.
    static let window: UInt32 = 32
    /// Below this many frames per pass (on average over a window), traffic is light.
    static let lightBelow: UInt32 = 2
    /// Above this many, it is heavy again. A ping-pong moves 1 frame per
    /// io_uring pass and 2 per read()/write() pass (the read and the answer).
    static let heavyAbove: UInt32 = 4

    /// True while the driver should use read()/write().
    private(set) var isLight = false
    private var passes: UInt32 = 0
    private var frames: UInt32 = 0

    /// Accounts for one pass of the driver; passes that moved nothing do not count.
    /// Returns true when the verdict changed.
    mutating func record(framesMoved: Int) -> Bool {
        guard framesMoved > 0 else { return false }
        passes &+= 1
        frames &+= UInt32(truncatingIfNeeded: min(framesMoved, 1 << 16))
        guard passes == Self.window else { return false }
        let wasLight = isLight
        if frames < Self.lightBelow * Self.window {
            isLight = true
        } else if frames > Self.heavyAbove * Self.window {
            isLight = false
        }
        passes = 0
        frames = 0
        return isLight != wasLight
    }
}

/// Whether the driver may leave io_uring for read()/write() under light
/// traffic (`TAPSTACK_ADAPTIVE_LINK_IO=0` keeps io_uring for every pass).
let adaptiveLinkIO = getenv("TAPSTACK_ADAPTIVE_LINK_IO").map { String(cString: $0) != "0" } ?? true
