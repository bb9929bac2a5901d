import CTun
import Glibc

/// A level-triggered event backed by an eventfd: `signal` makes it readable
/// until `reset`. Waiting sleeps in `poll()`, so a blocked caller uses no CPU.
/// Like Zircon's eventpair in the reference flow (steps 11–16).
public final class Event: Sendable {
    /// The eventfd; usable with poll/epoll by callers that wait on many.
    public let fd: Int32

    /// A new event, not signalled. Traps if the system has no eventfd left.
    public init() {
        fd = ctun_eventfd()
        precondition(fd >= 0, "eventfd failed: errno \(errno)")
    }

    deinit { close(fd) }

    /// Makes the event readable. Never blocks; any thread.
    public func signal() { ctun_eventfd_signal(fd) }

    /// Clears the event.
    public func reset() { ctun_eventfd_drain(fd) }

    /// Waits until signalled or `timeoutMilliseconds` pass (negative: forever).
    /// Returns true when signalled.
    @discardableResult
    public func wait(timeoutMilliseconds: Int32) -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let result = poll(&descriptor, 1, timeoutMilliseconds)
            if result < 0 && errno == EINTR { continue }
            return result > 0
        }
    }
}
