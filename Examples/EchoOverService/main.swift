// UDP echo in its own process, on a stack that `tapstack run --socket PATH` serves.
// Nonblocking batch calls through reused buffers; it waits on the socket when
// there is nothing to do (busy-polling first, adaptively unless $TAPSTACK_BUSY_POLL says otherwise).
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

    // A batch of datagrams per call each way, as the in-process echo takes
    // them: received into slots, sent back together.
    let slots = 32, slotSize = 65536
    let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: slots * slotSize, alignment: 16)
    func slot(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: buffers[(index * slotSize)..<((index + 1) * slotSize)])
    }
    var lengths = [Int](repeating: 0, count: slots)
    var sources = [SocketAddress?](repeating: nil, count: slots)
    while true {
        let count: Int
        do throws(SocketError) {
            count = try socket.receive(upTo: slots, into: slot) { index, length, source in
                lengths[index] = min(length, slotSize)
                sources[index] = source
            }
        } catch .networkUnreachable, .closed {
            command.fail("the stack went away")
        } catch {
            continue  // e.g. port unreachable for an earlier echo: the next datagram is unaffected
        }
        if count == 0 {
            socket.wait(for: .readable, timeoutMilliseconds: -1)
            continue
        }
        var echoed = 0
        while echoed < count {
            var next = echoed
            let (taken, blocked) = socket.send(batch: {
                guard next < count else { return nil }
                defer { next += 1 }
                return (UnsafeRawBufferPointer(rebasing: slot(next)[0..<lengths[next]]), sources[next])
            }, failed: { _ in })  // lost only that echo (e.g. no route back); the stack counts why
            echoed += taken
            if blocked { socket.wait(for: .writable, timeoutMilliseconds: -1) }  // the stack's link is backed up
        }
    }
}
