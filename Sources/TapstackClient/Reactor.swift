import CTapstackChannel
import Glibc
import SocketAPI
import Synchronization

/// Wakes suspended tasks when a descriptor becomes readable or writable:
/// one thread per process sleeping in epoll, so waiting never blocks a
/// thread of Swift's cooperative pool.
final class Reactor: Sendable {
    static let shared = Reactor()

    private struct Waiter {
        /// A duplicate of the waited-on descriptor: epoll registers each
        /// (descriptor, file) once, and two tasks may wait on one socket.
        let fd: Int32
        /// Resumes the task, or calls the callback; runs once.
        let resume: @Sendable () -> Void
    }

    private let epollFD = tsv_epoll_create()
    private let waiters = Locked<[UInt64: Waiter]>([:])
    private let nextID = Atomic<UInt64>(1)

    private init() {
        precondition(epollFD >= 0, "epoll_create1 failed: errno \(errno)")
        // Lives as long as the process; never joined.
        JoinableThread(name: "tapstack-react") { [self] in run() }.detach()
    }

    /// Suspends until `copy` is readable (or writable), has hung up, or the
    /// task is cancelled; closes `copy`, a duplicate the caller made.
    /// - Throws: `.cancelled` when the task was cancelled.
    func wait(owning copy: Int32, writable: Bool) async throws(SocketError) {
        let id = nextID.add(1, ordering: .relaxed).newValue
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                waiters.withLock { $0[id] = Waiter(fd: copy, resume: { continuation.resume() }) }
                if tsv_epoll_set(epollFD, 1, copy, UInt32(writable ? TSV_OUT : TSV_IN), id) != 0 || Task.isCancelled {
                    finish(id)
                }
            }
        } onCancel: {
            finish(id)
        }
        if Task.isCancelled { throw .cancelled }
    }

    /// Calls `callback` once, on the reactor's thread, when `copy` is readable
    /// (or writable) or has hung up; closes `copy`, a duplicate the caller made.
    func notify(owning copy: Int32, writable: Bool, _ callback: @escaping @Sendable () -> Void) {
        let id = nextID.add(1, ordering: .relaxed).newValue
        waiters.withLock { $0[id] = Waiter(fd: copy, resume: callback) }
        if tsv_epoll_set(epollFD, 1, copy, UInt32(writable ? TSV_OUT : TSV_IN), id) != 0 { finish(id) }
    }

    /// Tasks suspended in `wait` (for tests: act once a task sleeps).
    var waitingCount: Int { waiters.withLock { $0.count } }

    /// Resumes waiter `id` once, whoever gets there first.
    private func finish(_ id: UInt64) {
        guard let waiter = waiters.withLock({ $0.removeValue(forKey: id) }) else { return }
        _ = tsv_epoll_set(epollFD, 3, waiter.fd, 0, 0)
        close(waiter.fd)
        waiter.resume()
    }

    private func run() {
        let tags = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        let events = UnsafeMutablePointer<UInt32>.allocate(capacity: 64)
        while true {
            let count = tsv_epoll_wait(epollFD, tags, events, 64, -1)
            for index in 0..<Int(max(count, 0)) { finish(tags[index]) }
        }
    }
}
