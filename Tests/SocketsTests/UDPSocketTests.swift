import Glibc
import Link
import Testing
import TestSupport
@testable import Host
@testable import Sockets
import SocketAPI
@testable import Stack
@testable import Wire

/// A running host over a memory link, the test playing the wire.
final class LiveHost {
    let link: MemoryLink
    let host: NetworkHost

    init(ringCapacity: Int = 256, completesChecksums: Bool = false,
         configure: (inout StackConfiguration) -> Void = { _ in }) {
        link = MemoryLink(capacity: ringCapacity, completesChecksums: completesChecksums)
        var configuration = StackConfiguration.standard
        configure(&configuration)
        host = try! NetworkHost(configuration: configuration, link: link)
        host.start()
        _ = link.nextTransmitted()  // the gratuitous ARP
    }

    deinit { host.stop() }

    /// Runs `action` on another thread as soon as some thread waits on
    /// `socket` (it registered a one-shot waiter: it is asleep or about to
    /// be), as a peer on the wire would act while the test blocks; join the
    /// thread after. Records an issue if nobody waited within five seconds.
    func whenWaiting(on socket: UDPSocket, _ action: @escaping @Sendable () -> Void) -> JoinableThread {
        JoinableThread(name: "peer") {
            let deadline = Deadline(.seconds(5))
            while socket.oneShotWaiters == 0 && !deadline.hasPassed { usleep(200) }
            if socket.oneShotWaiters == 0 { Issue.record("nobody waited on the socket") }
            action()
        }
    }

    /// Injects `frame` once a thread waits on `socket` (see `whenWaiting`).
    func injectWhenWaiting(on socket: UDPSocket, _ frame: [UInt8]) -> JoinableThread {
        let link = self.link
        return whenWaiting(on: socket) { link.inject(frame) }
    }

    /// Teaches the stack the peer's MAC and swallows the ARP reply.
    func learnPeer() {
        link.inject(FrameBuilder.arp(.request))
        _ = link.nextTransmitted()
    }
}

/// CPU time used by the calling thread (other tests run in parallel in this process).
func threadCPUTimeNanoseconds() -> UInt64 {
    var usage = rusage()
    getrusage(1 /* RUSAGE_THREAD */, &usage)
    return UInt64(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000_000
        + UInt64(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1000
}

@Suite(.serialized) struct UDPSocketTests {
    @Test func receiveWithNothingQueuedWouldBlockAtOnce() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }
        // It did not wait: no waiter was ever registered.
        #expect(socket.oneShotWaiters == 0)
    }

    @Test func blockingReceiveWakesWhenTheStackQueuesADatagram() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        let injector = live.injectWhenWaiting(on: socket, Captured.udpRequest)
        let datagram = try socket.receive(timeout: .seconds(5))
        injector.join()
        #expect(datagram.payload == Array("hello\n".utf8))
        #expect(datagram.source == SocketAddress(IPv4Address(192, 0, 2, 1), 35789))
    }

    /// A timeout too large for nanoseconds (a program passing
    /// `.seconds(.max)` for "forever") works instead of trapping.
    @Test func aHugeTimeoutDoesNotTrap() throws {
        let live = LiveHost()
        live.learnPeer()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        live.link.inject(Captured.udpRequest)
        #expect(try socket.receive(timeout: .seconds(Int64.max)).payload == Array("hello\n".utf8))
        #expect(try socket.send([1], to: SocketAddress(FrameBuilder.peerIP, 9), timeout: .seconds(Int64.max)) == 1)
        #expect(Duration.seconds(Int64.max).saturatingNanoseconds == .max)
        #expect(Duration.seconds(-5).saturatingNanoseconds == 0)
        #expect(Duration.milliseconds(1500).saturatingNanoseconds == 1_500_000_000)
        #expect(Deadline(.seconds(Int64.max)).end == nil)
    }

    @Test func blockingReceiveTimesOutWithWouldBlock() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        let start = monotonicNow()
        #expect(throws: SocketError.wouldBlock) { try socket.receive(timeout: .milliseconds(200)) }
        let waited = monotonicNow().since(start)
        #expect(waited >= .milliseconds(190) && waited < .seconds(2))
    }

    @Test func blockedReceiverUsesNoCPU() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        let before = threadCPUTimeNanoseconds()
        #expect(throws: SocketError.wouldBlock) { try socket.receive(timeout: .milliseconds(500)) }
        let used = threadCPUTimeNanoseconds() - before
        // Spinning would burn ~500 ms; a waiter asleep in poll() uses well under 1 ms.
        #expect(used < 20_000_000, "CPU used while blocked: \(used / 1_000_000) ms")
    }

    @Test func closeWakesABlockedReceiverWithClosed() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        let closer = live.whenWaiting(on: socket) { socket.close() }
        #expect(throws: SocketError.closed) { try socket.receive(timeout: .seconds(30)) }
        closer.join()
    }

    /// getsockname of a connected socket bound to the wildcard shows the
    /// address it sends from (Linux: the source connect chose), not 0.0.0.0;
    /// disconnected, it shows the wildcard again.
    @Test func aConnectedSocketNamesItsSourceAddress() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 5000)
        #expect(socket.localAddress == SocketAddress(.any, 5000))
        try socket.connect(to: SocketAddress(FrameBuilder.peerIP, 9))
        #expect(socket.localAddress == SocketAddress(FrameBuilder.stackIP, 5000))
        socket.disconnect()
        #expect(socket.localAddress == SocketAddress(.any, 5000))
        let unbound = UDPSocket(host: live.host)
        try unbound.connect(to: SocketAddress(FrameBuilder.peerIP, 9))
        #expect(unbound.localAddress?.address == FrameBuilder.stackIP)
    }

    @Test func sendQueuesAFrameOnTheLink() throws {
        let live = LiveHost()
        live.learnPeer()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        let sent = try socket.send(Array("hello\n".utf8), to: SocketAddress(IPv4Address(192, 0, 2, 1), 35789))
        #expect(sent == 6)
        let frame = try #require(live.link.nextTransmitted())
        #expect(Array(frame[34..<48]) == Array(Captured.udpReply[34..<48]))
    }

    @Test func readinessCallbackFiresWhenADatagramArrives() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        let fired = Event()
        let token = socket.addReadinessCallback(.readable) { events in
            if events.contains(.readable) { fired.signal() }
        }
        #expect(!socket.readiness.contains(.readable))
        live.link.inject(Captured.udpRequest)
        #expect(fired.wait(timeoutMilliseconds: 5000))
        #expect(socket.readiness.contains(.readable))
        socket.removeReadinessCallback(token)
        #expect(try socket.receive().payload == Array("hello\n".utf8))
    }

    @Test func echoThroughTheShimMatchesTheCapture() throws {
        let live = LiveHost()
        live.link.inject(Captured.arpRequest)
        #expect(live.link.nextTransmitted() == Captured.arpReply)
        for _ in 0..<3 {
            live.link.inject(Captured.echoRequest)
            _ = live.link.nextTransmitted()
        }
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        live.link.inject(Captured.udpRequest)
        let datagram = try socket.receive(timeout: .seconds(5))
        try socket.send(datagram.payload, to: datagram.source)
        #expect(live.link.nextTransmitted() == Captured.udpReply)
    }
}
