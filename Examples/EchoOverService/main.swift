// UDP echo in its own process, on a stack that `tapstack run --socket PATH` serves.
// Nonblocking calls through one reused buffer; it waits on the socket when
// there is nothing to do (busy-polling first when $TAPSTACK_BUSY_POLL says so).
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
    while true {
        do throws(SocketError) {
            let (length, source) = try socket.receive(into: buffer)
            let payload = UnsafeRawBufferPointer(rebasing: buffer[0..<min(length, buffer.count)])
            while true {
                do throws(SocketError) {
                    try socket.send(payload, to: source)
                    break
                } catch .wouldBlock {
                    socket.wait(for: .writable, timeoutMilliseconds: -1)  // the stack's link is backed up
                }
            }
        } catch .wouldBlock {
            socket.wait(for: .readable, timeoutMilliseconds: -1)
        } catch .networkUnreachable, .closed {
            command.fail("the stack went away")
        } catch {
            continue  // e.g. port unreachable for an earlier echo: the next datagram is unaffected
        }
    }
}
