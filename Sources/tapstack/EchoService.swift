import Link
import Logging
import Sockets
import Stack

/// The UDP echo service (RFC 862): an ordinary, event-driven user of the
/// socket shim. A readiness callback asks the executor to run `drain` after
/// the batch, which uses the nonblocking calls until the socket would block,
/// so an echo costs no thread hand-off of its own.
///
/// Synchronisation (`@unchecked Sendable`): `scheduled` and `drainWork` are
/// touched only inside the stack (under its lock) or before the service starts.
final class EchoService: @unchecked Sendable {
    private let socket: UDPSocket
    private let host: NetworkHost
    private let logger: Logger
    @exclusivity(unchecked) private var scheduled = false
    /// `drain` as queued work, made once (a closure per batch would allocate).
    @exclusivity(unchecked) private var drainWork: () -> Void = {}
    private var callbackToken: Int?

    /// Binds `port` and starts answering.
    init(host: NetworkHost, port: UInt16, logger: Logger) throws(SocketError) {
        self.host = host
        self.logger = logger
        socket = UDPSocket(host: host, family: .ipv6)  // dual-stack: answers IPv4 and IPv6
        try socket.bind(port: port)
        // Strong captures (a weak one makes every retain of the service take
        // the slow path); `stop` breaks the cycles.
        drainWork = { self.drain() }
        callbackToken = socket.addReadinessCallback([.readable, .writable]) { _ in
            // Inside the stack: only queue the work.
            guard !self.scheduled else { return }
            self.scheduled = true
            host.execute(self.drainWork)
        }
        host.withStack { _ in
            scheduled = true
            host.execute(drainWork)
        }
    }

    /// Datagrams echoed per hold of the stack, at most (bounds how long other threads wait for it).
    private static let batchLimit = 256

    /// Echoes every queued datagram straight from the socket's queue into
    /// the link (no copy in between, no allocation), a batch of calls per
    /// hold of the stack; a datagram the full link refused stays queued for
    /// the next `.writable`.
    private func drain() {
        var failure: SocketError?
        var more = true
        while more {
            more = socket.withBatch { batch in
                scheduled = false
                for _ in 0..<Self.batchLimit {
                    var blocked = false
                    do throws(SocketError) {
                        try batch.receive { payload, source in
                            do throws(SocketError) {
                                try batch.send(payload, to: source)
                            } catch .wouldBlock {
                                blocked = true
                                return false
                            } catch {
                                // Lost only this echo (e.g. no route back); the counters say why.
                                failure = error
                            }
                            return true
                        }
                    } catch .wouldBlock {
                        return false
                    } catch .closed {
                        return false
                    } catch {
                        failure = error
                        continue
                    }
                    if blocked { return false }
                }
                return true
            }
        }
        if let failure { logger.debug("echo: \(failure)") }
    }

    /// Closes the socket; no further echo is sent.
    func stop() {
        if let callbackToken { socket.removeReadinessCallback(callbackToken) }
        socket.close()
        host.withStack { _ in drainWork = {} }
    }
}
