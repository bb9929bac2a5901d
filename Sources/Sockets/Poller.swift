import Host
import SocketAPI
import Stack
import Synchronization

/// Waits on many sockets at once, like `poll(2)`.
public enum SocketPoller {
    /// One socket and the events wanted from it.
    public struct Interest: Sendable {
        /// The socket to watch.
        public var socket: UDPSocket
        /// The events wanted from it (`.error` and `.closed` are always reported).
        public var events: ReadinessEvents
        /// Watch `socket` for `events`.
        public init(_ socket: UDPSocket, _ events: ReadinessEvents) {
            self.socket = socket
            self.events = events
        }
    }

    /// Blocks the calling thread until at least one socket has an event it
    /// was asked for (or `.error`/`.closed`, always reported), or `timeout`
    /// passes (nil: forever). Returns each ready socket with its events, in
    /// the order given; empty after a timeout. Sleeps in `poll()` meanwhile.
    public static func wait(_ interests: [Interest], timeout: Duration?) -> [(socket: UDPSocket, events: ReadinessEvents)] {
        let event = Event()
        let signalled = Atomic<Bool>(false)
        let deadline = Deadline(timeout)
        while true {
            // A wake-up whose readiness another thread took must not make the next sleep return at once.
            event.reset()
            signalled.store(false, ordering: .sequentiallyConsistent)
            var tokens: [(UDPSocket, Int)] = []
            var anyReady = false
            for interest in interests {
                let mask = interest.events.union([.error, .closed])
                let (already, token) = interest.socket.armOnce(mask) { _ in
                    signalled.store(true, ordering: .sequentiallyConsistent)
                    event.signal()
                }
                if already != nil { anyReady = true }
                if let token { tokens.append((interest.socket, token)) }
            }
            if !anyReady {
                if let host = interests.first?.socket.host, host.isExecutorThread {
                    // Nothing else runs the core while the executor waits: run it here.
                    _ = host.runTurns(until: { signalled.load(ordering: .sequentiallyConsistent) }, deadline: deadline.end ?? .max)
                } else {
                    do throws(SocketError) { try deadline.wait(on: event) } catch { /* the deadline passed: report what is ready */ }
                }
            }
            for (socket, token) in tokens { socket.removeReadinessCallback(token) }
            let ready = interests.compactMap { interest -> (socket: UDPSocket, events: ReadinessEvents)? in
                let events = interest.socket.readiness.intersection(interest.events.union([.error, .closed]))
                return events.isEmpty ? nil : (interest.socket, events)
            }
            if !ready.isEmpty || deadline.hasPassed { return ready }
        }
    }
}
