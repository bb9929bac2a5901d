// UDP echo with async/await: no thread is blocked while waiting.
import Sockets

let host = try NetworkHost.start(interface: CommandLine.arguments.dropFirst().first ?? "tap0")
let socket = UDPSocket(host: host)
try socket.bind(port: 7)
for try await datagram in socket.datagrams {                     // suspends until one arrives
    try await socket.sendWhenWritable(datagram.payload, to: datagram.source)
}
