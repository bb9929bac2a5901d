// UDP echo in its own process, on a stack that `tapstack run --socket PATH` serves.
// Nonblocking calls through one reused buffer; it sleeps in poll() on the
// socket's descriptor when there is nothing to do.
import ExampleSupport
import Glibc
import Sockets
import TapstackClient

let command = ExampleCommand(usage: """
    [SOCKET-PATH [PORT]]   UDP echo through the socket service at SOCKET-PATH
        (default $TAPSTACK_SOCKET or /run/tapstack/tap0.sock), on PORT (default 7)
    """, maximumArguments: 2)
let path = command.argument(0) ?? TapstackClient.UDPSocket.defaultServicePath
let port = command.argument(1, as: "a port number (1-65535)") { UInt16($0).flatMap { $0 == 0 ? nil : $0 } } ?? 7

command.run {
    let socket: TapstackClient.UDPSocket
    do throws(SocketError) {
        socket = try TapstackClient.UDPSocket(servicePath: path)
    } catch .serviceUnavailable {
        command.fail("no tapstack socket service at \(path) (start one with `tapstack run --socket \(path)`)")
    }
    try socket.bind(port: port)
    let ready = "echoing UDP port \(port) through \(path)\n"
    _ = ready.withCString { write(1, $0, strlen($0)) }  // unbuffered: a script waits for this line

    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    func sleep(until events: Int16) {
        var descriptor = pollfd(fd: socket.fileDescriptor, events: events, revents: 0)
        _ = poll(&descriptor, 1, -1)
    }
    while true {
        do throws(SocketError) {
            let (length, source) = try socket.receive(into: buffer)
            let payload = UnsafeRawBufferPointer(rebasing: buffer[0..<min(length, buffer.count)])
            while true {
                do throws(SocketError) {
                    try socket.send(payload, to: source)
                    break
                } catch .wouldBlock {
                    sleep(until: Int16(POLLOUT))  // the stack's link is backed up
                }
            }
        } catch .wouldBlock {
            sleep(until: Int16(POLLIN))
        } catch .networkUnreachable, .closed {
            command.fail("the stack went away")
        } catch {
            continue  // e.g. port unreachable for an earlier echo: the next datagram is unaffected
        }
    }
}
