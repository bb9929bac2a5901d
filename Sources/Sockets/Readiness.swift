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
        let id: Int
        let mask: ReadinessEvents
        let once: Bool
        let callback: (ReadinessEvents) -> Void
    }

    /// In registration order; a socket has a handful, so an array beats a
    /// dictionary on the per-event walk.
    @exclusivity(unchecked) private var waiters: [Waiter] = []
    @exclusivity(unchecked) private var nextID = 0

    /// Registers `callback` for the events in `mask`; a `once` waiter is
    /// removed after it first fires.
    func register(_ mask: ReadinessEvents, once: Bool = false,
                  _ callback: @escaping (ReadinessEvents) -> Void) -> Token {
        nextID += 1
        waiters.append(Waiter(id: nextID, mask: mask, once: once, callback: callback))
        return Token(id: nextID)
    }

    func unregister(_ token: Token) { waiters.removeAll { $0.id == token.id } }

    var isEmpty: Bool { waiters.isEmpty }

    /// Waiters registered to fire once (threads or tasks waiting now).
    var oneShotCount: Int { waiters.count { $0.once } }

    /// Calls every waiter whose mask intersects `events`, in registration order.
    func notify(_ events: ReadinessEvents) {
        var index = 0
        while index < waiters.count {
            guard !waiters[index].mask.isDisjoint(with: events) else {
                index += 1
                continue
            }
            let callback = waiters[index].callback
            if waiters[index].once { waiters.remove(at: index) } else { index += 1 }
            callback(events)
        }
    }
}
