// UDP echo with async/await: no thread is blocked while waiting.
import ExampleSupport
import Sockets

let command = ExampleCommand(usage: "[INTERFACE]   UDP echo on port 7 of a stack on INTERFACE (default tap0)", maximumArguments: 1)
await command.run {
    let host = try NetworkHost.start(interface: command.argument(0) ?? "tap0")
    let socket = UDPSocket(host: host)
    try socket.bind(port: 7)
    for try await datagram in socket.datagrams {                     // suspends until one arrives
        try await socket.sendWhenWritable(datagram.payload, to: datagram.source)
    }
}
