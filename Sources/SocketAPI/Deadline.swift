import Glibc

/// The monotonic clock in nanoseconds (vDSO: no system call).
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// A wait's end on the monotonic clock: a timeout from now, or never.
public struct Deadline: Sendable {
    /// Monotonic nanoseconds at which the wait ends; nil: never.
    public let end: UInt64?

    /// `timeout` from now (nil: never). A timeout too long to represent never ends either.
    public init(_ timeout: Duration?) {
        guard let timeout else {
            end = nil
            return
        }
        let (sum, overflow) = monotonicNanoseconds().addingReportingOverflow(timeout.saturatingNanoseconds)
        end = overflow ? nil : sum
    }

    /// True once the deadline has passed (never for no deadline).
    public var hasPassed: Bool { end.map { monotonicNanoseconds() >= $0 } ?? false }

    /// Milliseconds left for `poll()`, rounded up so a wait does not end early:
    /// -1 for no deadline, 0 once passed, at most `Int32.max`.
    public var pollTimeout: Int32 {
        guard let end else { return -1 }
        let now = monotonicNanoseconds()
        guard now < end else { return 0 }
        return Int32(clamping: (end - now) / 1_000_000 + ((end - now) % 1_000_000 == 0 ? 0 : 1))
    }

    /// Sleeps on `event` until signalled or the deadline.
    /// - Throws: `.wouldBlock` when the deadline has passed.
    public func wait(on event: Event) throws(SocketError) {
        let timeout = pollTimeout
        guard timeout != 0 else { throw .wouldBlock }
        event.wait(timeoutMilliseconds: timeout)
    }
}

extension Duration {
    /// Whole nanoseconds, clamped to 0...UInt64.max (a huge timeout saturates
    /// instead of trapping).
    public var saturatingNanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0, attoseconds >= 0 || seconds > 0 else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return .max }
        let (sum, carry) = whole.addingReportingOverflow(UInt64(max(0, attoseconds) / 1_000_000_000))
        return carry ? .max : sum
    }
}
