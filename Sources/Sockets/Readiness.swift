import Stack

/// A list of callbacks interested in a socket's readiness events, as in
/// gVisor's `waiter.Queue`. Callbacks run on the thread that changed the
/// state (inside the stack) and must not block.
///
/// Synchronisation: only touched while the owning `NetworkHost` lock is held.
final class WaiterQueue {
    struct Token: Hashable { let id: Int }
    private var waiters: [Int: (mask: ReadinessEvents, callback: (ReadinessEvents) -> Void)] = [:]
    private var nextID = 0

    /// Registers `callback` for the events in `mask`.
    func register(_ mask: ReadinessEvents, _ callback: @escaping (ReadinessEvents) -> Void) -> Token {
        nextID += 1
        waiters[nextID] = (mask, callback)
        return Token(id: nextID)
    }

    func unregister(_ token: Token) { waiters[token.id] = nil }

    /// Calls every waiter whose mask intersects `events`.
    func notify(_ events: ReadinessEvents) {
        for (_, waiter) in waiters where !waiter.mask.isDisjoint(with: events) {
            waiter.callback(events)
        }
    }
}
