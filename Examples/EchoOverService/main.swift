// UDP echo in its own process, on a stack that `tapstack run` serves:
//   EchoOverService [SOCKET-PATH [PORT]]   (default $TAPSTACK_SOCKET or /run/tapstack/tap0.sock, port 7)
// Nonblocking calls through one reused buffer; it sleeps in poll() on the
// socket's descriptor when there is nothing to do.
import Glibc
import Sockets
import TapstackClient

let arguments = CommandLine.arguments.dropFirst()
let path = arguments.first ?? TapstackClient.UDPSocket.defaultServicePath
let port = arguments.dropFirst().first.flatMap { UInt16($0) } ?? 7
let socket = try TapstackClient.UDPSocket(servicePath: path)
try socket.bind(port: port)
let ready = "echoing UDP port \(port) through \(path)\n"
_ = ready.withCString { write(1, $0, strlen($0)) }  // unbuffered: a script waits for this line

let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
func sleep(until events: Int16) {
    var descriptor = pollfd(fd: socket.fileDescriptor, events: events, revents: 0)
    _ = poll(&descriptor, 1, -1)
}
while true {
    do {
        let (length, source) = try socket.receive(into: buffer)
        let payload = UnsafeRawBufferPointer(rebasing: buffer[0..<min(length, buffer.count)])
        while true {
            do {
                try socket.send(payload, to: source)
                break
            } catch .wouldBlock {
                sleep(until: Int16(POLLOUT))  // the stack's link is backed up
            }
        }
    } catch .wouldBlock {
        sleep(until: Int16(POLLIN))
    } catch .networkUnreachable, .closed {
        print("the stack went away")
        exit(1)
    } catch {
        continue  // e.g. port unreachable for an earlier echo: the next datagram is unaffected
    }
}
