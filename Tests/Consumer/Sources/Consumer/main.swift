// A tiny echo on a stack over a memory link, built against tapstack as a
// dependency: what a library user writes first.
import Glibc
import Sockets

func fail(_ message: String) -> Never {
    print("consumer: FAIL \(message)")
    exit(1)
}

let link = MemoryLink()
let host = try NetworkHost(configuration: .standard, link: link)
host.start()
defer { host.stop() }

// An echo server and a client on one stack: a datagram to the stack's own
// address is delivered locally, as on Linux.
let server = UDPSocket(host: host)
try server.bind(port: 7)
let client = UDPSocket(host: host)
let serverAddress = SocketAddress(host.configuration.interface.address, 7)
_ = try client.send(Array("hello, tapstack".utf8), to: serverAddress, timeout: .seconds(2))
let request = try server.receive(timeout: .seconds(2))
_ = try server.send(request.payload, to: request.source, timeout: .seconds(2))
let reply = try client.receive(timeout: .seconds(2))
guard reply.payload == Array("hello, tapstack".utf8), reply.source == serverAddress else {
    fail("echo returned \(reply.payload) from \(reply.source)")
}

// A datagram to a neighbour reaches the link as an ARP request for it first
// (after the stack's own announcement, a request for its own address).
let neighbour = IPv4Address(192, 0, 2, 1)
_ = try client.send([1, 2, 3], to: SocketAddress(neighbour, 9000), timeout: .seconds(2))
let arpRequest: [UInt8] = [0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01]
var seen: [[UInt8]] = []
while seen.count < 4, let frame = link.nextTransmitted(timeoutMilliseconds: 2000) {
    seen.append(frame)
    guard frame.count >= 42, Array(frame[0..<6]) == [0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
          Array(frame[12..<22]) == arpRequest else { fail("the link got a frame that is no ARP request: \(frame)") }
    if Array(frame[38..<42]) == [192, 0, 2, 1] { break }
}
guard let last = seen.last, Array(last[38..<42]) == [192, 0, 2, 1] else {
    fail("expected an ARP request for 192.0.2.1, the link got \(seen)")
}
print("consumer: echo and ARP through tapstack \(TapstackVersion.current) as a dependency: ok")
