import SocketAPI
import Stack

/// Callbacks interested in a socket's readiness events, as in gVisor's
/// `waiter.Queue`. Callbacks run on the thread that changed the state,
/// inside the stack, and must not block or call back into the socket.
///
/// Synchronisation: only touched while the owning `NetworkHost` lock is held.
final class WaiterQueue {
    struct Token: Hashable { let id: Int }

    private struct Waiter {
        let mask: ReadinessEvents
        let once: Bool
        let callback: (ReadinessEvents) -> Void
    }

    @exclusivity(unchecked) private var waiters: [Int: Waiter] = [:]
    @exclusivity(unchecked) private var nextID = 0

    /// Registers `callback` for the events in `mask`; a `once` waiter is
    /// removed after it first fires.
    func register(_ mask: ReadinessEvents, once: Bool = false,
                  _ callback: @escaping (ReadinessEvents) -> Void) -> Token {
        nextID += 1
        waiters[nextID] = Waiter(mask: mask, once: once, callback: callback)
        return Token(id: nextID)
    }

    func unregister(_ token: Token) { waiters[token.id] = nil }

    var isEmpty: Bool { waiters.isEmpty }

    /// Waiters registered to fire once (threads or tasks waiting now).
    var oneShotCount: Int { waiters.values.count { $0.once } }

    /// Calls every waiter whose mask intersects `events`.
    func notify(_ events: ReadinessEvents) {
        for (id, waiter) in waiters where !waiter.mask.isDisjoint(with: events) {
            if waiter.once { waiters[id] = nil }
            waiter.callback(events)
        }
    }
}
