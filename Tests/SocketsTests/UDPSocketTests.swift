import Glibc
import Link
import Testing
import TestSupport
@testable import Sockets
@testable import Stack
@testable import Wire

/// A running host over a memory link, the test playing the wire.
final class LiveHost {
    let link: MemoryLink
    let host: NetworkHost

    init(ringCapacity: Int = 256, handsOverOnInject: Bool = false,
         configure: (inout StackConfiguration) -> Void = { _ in }) {
        link = MemoryLink(capacity: ringCapacity, handsOverOnInject: handsOverOnInject)
        var configuration = StackConfiguration.standard
        configure(&configuration)
        host = NetworkHost(configuration: configuration, link: link)
        host.start()
        _ = link.nextTransmitted()  // the gratuitous ARP
    }

    deinit { host.stop() }

    /// Injects `frame` from another thread after `delay` microseconds, as a
    /// peer on the wire would while the test waits; join the thread after.
    func injectLater(_ frame: [UInt8], afterMicroseconds delay: UInt32 = 100_000) -> JoinableThread {
        let link = self.link
        return JoinableThread(name: "injector") {
            usleep(delay)
            link.inject(frame)
        }
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
        let start = monotonicNow()
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }
        #expect(monotonicNow().since(start) < .milliseconds(50))
    }

    @Test func blockingReceiveWakesWhenTheStackQueuesADatagram() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        let injector = live.injectLater(Captured.udpRequest)
        let datagram = try socket.receive(timeout: .seconds(5))
        injector.join()
        #expect(datagram.payload == Array("hello\n".utf8))
        #expect(datagram.source == SocketAddress(IPv4Address(192, 0, 2, 1), 35789))
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
        let closer = JoinableThread(name: "closer") {
            usleep(100_000)
            socket.close()
        }
        let start = monotonicNow()
        #expect(throws: SocketError.closed) { try socket.receive(timeout: .seconds(5)) }
        // Woken by the close itself, not by the timeout.
        #expect(monotonicNow().since(start) < .seconds(1))
        closer.join()
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
