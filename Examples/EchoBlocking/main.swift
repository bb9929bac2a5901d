// UDP echo with blocking calls: each call sleeps until the stack signals the socket ready.
import Sockets

let host = try NetworkHost.start(interface: CommandLine.arguments.dropFirst().first ?? "tap0")
let socket = UDPSocket(host: host)
try socket.bind(port: 7)
while true {
    let datagram = try socket.receive(timeout: nil)               // sleeps until a datagram is queued
    try socket.send(datagram.payload, to: datagram.source, timeout: nil)  // waits if the link is full
}
