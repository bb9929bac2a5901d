import Link
import Logging
import Sockets
import Stack

/// The UDP echo service (RFC 862): an ordinary user of the socket shim,
/// sending every datagram back to where it came from.
final class EchoService: Sendable {
    private let socket: UDPSocket
    private let thread: JoinableThread

    /// Binds `port` and starts answering on a thread of its own.
    init(host: NetworkHost, port: UInt16, logger: Logger) throws(SocketError) {
        let socket = UDPSocket(host: host)
        try socket.bind(port: port)
        self.socket = socket
        thread = JoinableThread(name: "tapstack-echo") {
            while true {
                do throws(SocketError) {
                    let datagram = try socket.receive(timeout: nil)
                    try socket.send(datagram.payload, to: datagram.source)
                } catch .closed {
                    return
                } catch {
                    // A failed send (e.g. link full, neighbour unreachable) loses
                    // only that echo; the stack's counters record why.
                    logger.debug("echo: \(error)")
                }
            }
        }
    }

    /// Closes the socket, which wakes and ends the service thread.
    func stop() {
        socket.close()
        thread.join()
    }
}
