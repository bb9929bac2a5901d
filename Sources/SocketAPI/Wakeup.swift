import CTapstackSystem
import Glibc
import Synchronization

/// An eventfd-backed wake-up for a thread that sleeps until another thread
/// has work for it, costing a system call only when the sleeper really sleeps.
///
/// The sleeper calls `wait(timeoutMilliseconds:until:)`; producers call
/// `signal()` after publishing work. `sleeping` is set before the sleeper's
/// last look for work and read by `signal` after the work is published, both
/// sequentially consistent, so either the sleeper sees the work or the
/// producer sees it sleeping and writes the eventfd (no lost wake-up).
public final class Wakeup: Sendable {
    /// The eventfd; readable while a signal is pending.
    public let fd: Int32
    private let sleeping = Atomic<Bool>(false)

    public init() {
        fd = csys_eventfd()
        precondition(fd >= 0, "eventfd failed: errno \(errno)")
    }

    deinit { Glibc.close(fd) }

    /// Wakes the sleeper if it sleeps. Any thread; never blocks.
    @inline(__always)
    public func signal() {
        if sleeping.load(ordering: .sequentiallyConsistent), sleeping.exchange(false, ordering: .sequentiallyConsistent) {
            csys_eventfd_signal(fd)
        }
    }

    /// Wakes the sleeper unconditionally (used to stop it).
    public func forceSignal() { csys_eventfd_signal(fd) }

    /// For a sleeper that waits on `fd` in its own poll or epoll set: announces
    /// the sleep, then looks for work once more. Returns false (sleep
    /// cancelled) when `hasWork` is true; otherwise sleep, then `endSleep()`.
    public func beginSleep(unless hasWork: () -> Bool) -> Bool {
        sleeping.store(true, ordering: .sequentiallyConsistent)
        if hasWork() {
            sleeping.store(false, ordering: .sequentiallyConsistent)
            return false
        }
        return true
    }

    /// Ends a sleep begun with `beginSleep`: no more signals are sent, and a
    /// signal already sent is cleared.
    public func endSleep() {
        sleeping.store(false, ordering: .sequentiallyConsistent)
        csys_eventfd_drain(fd)
    }

    /// Clears a signal that arrived outside a sleep (a sleeper that found
    /// `fd` readable in its own poll set without sleeping).
    public func clear() { csys_eventfd_drain(fd) }

    /// Sleeps until signalled or the timeout passes, unless `hasWork` is
    /// already true after announcing the sleep. A negative timeout waits forever.
    /// `extraFD`, if not -1, also ends the sleep when it polls with `extraEvents`.
    /// Returns the `revents` of `extraFD` (0 if none).
    @discardableResult
    public func wait(timeoutMilliseconds: Int32, extraFD: Int32 = -1, extraEvents: Int16 = 0,
                     hasWork: () -> Bool) -> Int16 {
        sleeping.store(true, ordering: .sequentiallyConsistent)
        if hasWork() {
            sleeping.store(false, ordering: .sequentiallyConsistent)
            return 0
        }
        var fds = (pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: extraFD, events: extraEvents, revents: 0))
        let count: nfds_t = extraFD >= 0 ? 2 : 1
        _ = withUnsafeMutablePointer(to: &fds) {
            $0.withMemoryRebound(to: pollfd.self, capacity: 2) { poll($0, count, timeoutMilliseconds) }
        }
        sleeping.store(false, ordering: .sequentiallyConsistent)
        if fds.0.revents != 0 { csys_eventfd_drain(fd) }
        return fds.1.revents
    }
}
