import Link
import Logging
import Sockets
import Stack

/// The UDP echo service (RFC 862): an ordinary, event-driven user of the
/// socket shim. A readiness callback asks the stack thread to run `drain`,
/// which uses the nonblocking calls until the socket would block, so an echo
/// costs no thread hand-off of its own.
final class EchoService: @unchecked Sendable {
    private let socket: UDPSocket
    private let host: NetworkHost
    private let logger: Logger
    // Touched only by `drain`, which runs on the stack thread alone.
    @exclusivity(unchecked) private var waitingForRoom: (length: Int, source: SocketAddress)?
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    // Guarded by the stack's lock (set in the callback, cleared in `drain`).
    @exclusivity(unchecked) private var scheduled = false

    /// Binds `port` and starts answering.
    init(host: NetworkHost, port: UInt16, logger: Logger) throws(SocketError) {
        self.host = host
        self.logger = logger
        socket = UDPSocket(host: host)
        try socket.bind(port: port)
        _ = socket.addReadinessCallback([.readable, .writable]) { [weak self] _ in
            // Inside the stack: only queue the work.
            guard let self, !self.scheduled else { return }
            self.scheduled = true
            host.execute { [weak self] in self?.drain() }
        }
        host.withStack { _ in
            scheduled = true
            host.execute { [weak self] in self?.drain() }
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
