import Link
import Logging
import Sockets
import Stack

/// The UDP echo service (RFC 862): an ordinary, event-driven user of the
/// socket shim. A readiness callback asks the executor to run `drain` after
/// the batch, which uses the nonblocking calls until the socket would block,
/// so an echo costs no thread hand-off of its own.
///
/// Synchronisation (`@unchecked Sendable`): `scheduled` is touched only
/// inside the stack (under its lock); `waitingForRoom` and `buffer` only by
/// `drain`, which runs on the executor alone.
final class EchoService: @unchecked Sendable {
    private let socket: UDPSocket
    private let host: NetworkHost
    private let logger: Logger
    @exclusivity(unchecked) private var waitingForRoom: (length: Int, source: SocketAddress)?
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    @exclusivity(unchecked) private var scheduled = false
    /// `drain` as queued work, made once (a closure per batch would allocate).
    @exclusivity(unchecked) private var drainWork: () -> Void = {}

    /// Binds `port` and starts answering.
    init(host: NetworkHost, port: UInt16, logger: Logger) throws(SocketError) {
        self.host = host
        self.logger = logger
        socket = UDPSocket(host: host)
        try socket.bind(port: port)
        drainWork = { [weak self] in self?.drain() }
        _ = socket.addReadinessCallback([.readable, .writable]) { [weak self] _ in
            // Inside the stack: only queue the work.
            guard let self, !self.scheduled else { return }
            self.scheduled = true
            host.execute(self.drainWork)
        }
        host.withStack { _ in
            scheduled = true
            host.execute(drainWork)
        }
    }

    deinit { buffer.deallocate() }

    /// Echoes every queued datagram, through one reused buffer (no
    /// allocation per datagram); a datagram the full link refused waits in
    /// the buffer for the next `.writable`.
    private func drain() {
        host.withStack { _ in scheduled = false }
        while true {
            let datagram: (length: Int, source: SocketAddress)
            if let waiting = waitingForRoom {
                datagram = waiting
                waitingForRoom = nil
            } else {
                do throws(SocketError) {
                    datagram = try socket.receive(into: buffer)
                } catch .wouldBlock {
                    return
                } catch .closed {
                    return
                } catch {
                    logger.debug("echo: \(error)")
                    continue
                }
            }
            do throws(SocketError) {
                try socket.send(UnsafeRawBufferPointer(rebasing: buffer[0..<datagram.length]), to: datagram.source)
            } catch .wouldBlock {
                waitingForRoom = datagram
                return
            } catch {
                // Lost only this echo (e.g. no route back); the counters say why.
                logger.debug("echo to \(datagram.source): \(error)")
            }
        }
    }

    /// Closes the socket; no further echo is sent.
    func stop() {
        socket.close()
    }
}
