// UDP echo with nonblocking calls driven by a readiness callback.
import ExampleSupport
import Sockets

let command = ExampleCommand(usage: "[INTERFACE]   UDP echo on port 7 of a stack on INTERFACE (default tap0)", maximumArguments: 1)
command.run {
    let host = try NetworkHost.start(interface: command.argument(0) ?? "tap0")
    let socket = UDPSocket(host: host)
    try socket.bind(port: 7)
    let readable = Event()
    // The stack runs this when a datagram is queued; it must not block, so it only signals.
    _ = socket.addReadinessCallback(.readable) { _ in readable.signal() }
    while true {
        readable.reset()
        while let datagram = try? socket.receive() {                 // throws .wouldBlock once drained
            _ = try? socket.send(datagram.payload, to: datagram.source)  // .wouldBlock: link full, echo lost
        }
        readable.wait(timeoutMilliseconds: -1)
    }
}
