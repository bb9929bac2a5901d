// UDP echo with blocking calls: each call sleeps until the stack signals the socket ready.
import ExampleSupport
import Sockets

let command = ExampleCommand(usage: "[INTERFACE]   UDP echo on port 7 of a stack on INTERFACE (default tap0)", maximumArguments: 1)
command.run {
    let host = try NetworkHost.start(interface: command.argument(0) ?? "tap0")
    let socket = UDPSocket(host: host)
    try socket.bind(port: 7)
    while true {
        let datagram = try socket.receive(timeout: nil)               // sleeps until a datagram is queued
        try socket.send(datagram.payload, to: datagram.source, timeout: nil)  // waits if the link is full
    }
}
