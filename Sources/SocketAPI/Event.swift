import CTapstackSystem
import Glibc
import Synchronization

/// A level-triggered event: `signal` makes it set until `reset`. Waiting
/// sleeps in `poll()` on an eventfd, so a blocked caller uses no CPU. Like
/// Zircon's eventpair in the reference flow (steps 11–16).
///
/// The eventfd is made on first use by a waiter (or a reader of `fd`), not
/// with the event: a socket only signalled, never waited on (the socket
/// service opens one per client socket) costs no descriptor, and a process
/// out of descriptors still gets working sockets. Until it exists a signal
/// is remembered in a flag, and a waiter that cannot make one sleeps in
/// short steps instead.
public final class Event: Sendable {
    private let descriptor = Atomic<Int32>(-1)
    /// A signal that came when there was no eventfd yet.
    private let signalledEarly = Atomic<Bool>(false)

    /// A new event, not signalled.
    public init() {}

    deinit {
        let fd = descriptor.load(ordering: .acquiring)
        if fd >= 0 { close(fd) }
    }

    /// The eventfd, made now if needed; readable while the event is set.
    /// For callers that wait on many; -1 when the process has no descriptor left.
    public var fd: Int32 { makeDescriptor() }

    private func makeDescriptor() -> Int32 {
        let existing = descriptor.load(ordering: .acquiring)
        if existing >= 0 { return existing }
        let made = csys_eventfd()
        guard made >= 0 else { return -1 }
        let (won, current) = descriptor.compareExchange(expected: -1, desired: made, ordering: .acquiringAndReleasing)
        if !won {
            close(made)
            return current
        }
        // Carry over a signal that came before the eventfd existed.
        if signalledEarly.exchange(false, ordering: .acquiringAndReleasing) { csys_eventfd_signal(made) }
        return made
    }

    /// Sets the event. Never blocks; any thread.
    public func signal() {
        let fd = descriptor.load(ordering: .acquiring)
        if fd >= 0 {
            csys_eventfd_signal(fd)
            return
        }
        signalledEarly.store(true, ordering: .sequentiallyConsistent)
        // The eventfd may have been made meanwhile, after its maker looked at the flag.
        let made = descriptor.load(ordering: .sequentiallyConsistent)
        if made >= 0 { csys_eventfd_signal(made) }
    }

    /// Clears the event.
    public func reset() {
        signalledEarly.store(false, ordering: .sequentiallyConsistent)
        let fd = descriptor.load(ordering: .acquiring)
        if fd >= 0 { csys_eventfd_drain(fd) }
    }

    /// Waits until set or `timeoutMilliseconds` pass (negative: forever).
    /// Returns true when set.
    @discardableResult
    public func wait(timeoutMilliseconds: Int32) -> Bool {
        let fd = makeDescriptor()
        guard fd >= 0 else { return waitWithoutDescriptor(timeoutMilliseconds: timeoutMilliseconds) }
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let result = poll(&descriptor, 1, timeoutMilliseconds)
            if result < 0 && errno == EINTR { continue }
            return result > 0
        }
    }

    /// Out of descriptors: look at the flag every millisecond.
    private func waitWithoutDescriptor(timeoutMilliseconds: Int32) -> Bool {
        var waited: Int32 = 0
        while timeoutMilliseconds < 0 || waited < timeoutMilliseconds {
            if signalledEarly.load(ordering: .sequentiallyConsistent) { return true }
            if descriptor.load(ordering: .acquiring) >= 0 { return wait(timeoutMilliseconds: timeoutMilliseconds - waited) }
            usleep(1000)
            waited += 1
        }
        return signalledEarly.load(ordering: .sequentiallyConsistent)
    }
}
