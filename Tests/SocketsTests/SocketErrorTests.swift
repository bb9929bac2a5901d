import Glibc
import Link
import Testing
import TestSupport
@testable import Sockets
@testable import Stack
@testable import Wire

/// Every error a socket call can give, each from the situation that causes it.
@Suite(.serialized) struct SocketErrorTests {
    let peer = SocketAddress(FrameBuilder.peerIP, 9)

    @Test func addressInUse() throws {
        let live = LiveHost()
        let first = UDPSocket(host: live.host)
        try first.bind(port: 4000)
        #expect(throws: SocketError.addressInUse) { try UDPSocket(host: live.host).bind(port: 4000) }
    }

    @Test func addressNotAvailable() {
        let live = LiveHost()
        #expect(throws: SocketError.addressNotAvailable) { try UDPSocket(host: live.host).bind(address: IPv4Address(10, 1, 1, 1), port: 7) }
    }

    @Test func wouldBlockOnEmptyReceive() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 7)
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }
    }

    @Test func wouldBlockWhenTheLinkIsFull() throws {
        let live = LiveHost(ringCapacity: 4) { $0.transmitReserveFrames = 0 }
        live.learnPeer()
        let socket = UDPSocket(host: live.host)
        for _ in 0..<4 { try socket.send([1], to: peer) }
        #expect(throws: SocketError.wouldBlock) { try socket.send([1], to: peer) }
        #expect(live.host.counters[.udpTxDatagrams] == 4)  // nothing dropped silently: the fifth was refused
    }

    @Test func messageTooLong() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        #expect(throws: SocketError.messageTooLong) { try socket.send([UInt8](repeating: 0, count: 65508), to: peer) }
        socket.dontFragment = true
        #expect(throws: SocketError.messageTooLong) { try socket.send([UInt8](repeating: 0, count: 1473), to: peer) }
    }

    @Test func networkUnreachable() {
        let live = LiveHost()
        #expect(throws: SocketError.networkUnreachable) {
            try UDPSocket(host: live.host).send([1], to: SocketAddress(IPv4Address(198, 51, 100, 1), 9))
        }
    }

    @Test func hostUnreachableAfterARPFails() throws {
        let live = LiveHost { $0.arpRetryInterval = .milliseconds(20) }
        let socket = UDPSocket(host: live.host)
        try socket.send([1], to: SocketAddress(IPv4Address(192, 0, 2, 99), 9))
        #expect(socket.event.wait(timeoutMilliseconds: 5000))
        #expect(socket.readiness.contains(.error))
        #expect(throws: SocketError.hostUnreachable) { try socket.receive() }
    }

    @Test func connectionRefusedOnAConnectedSocket() throws {
        let live = LiveHost()
        live.learnPeer()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 5000)
        try socket.connect(to: peer)
        try socket.send([1, 2, 3])
        let sent = try #require(live.link.nextTransmitted())
        live.link.inject(FrameBuilder.ethernet(type: .ipv4, payload: FrameBuilder.ipv4(
            proto: .icmp, payload: FrameBuilder.icmp(type: 3, code: 3, payload: Array(sent[14..<42])))))
        #expect(throws: SocketError.connectionRefused) { try socket.receive(timeout: .seconds(5)) }
    }

    @Test func notConnected() {
        let live = LiveHost()
        #expect(throws: SocketError.notConnected) { try UDPSocket(host: live.host).send([1]) }
    }

    @Test func closed() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        socket.close()
        #expect(throws: SocketError.closed) { try socket.receive() }
        #expect(throws: SocketError.closed) { try socket.send([1], to: peer) }
        #expect(throws: SocketError.closed) { try socket.bind(port: 7) }
    }

    @Test func invalidArgument() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        #expect(throws: SocketError.invalidArgument) { try socket.send([1], to: SocketAddress(FrameBuilder.peerIP, 0)) }
        #expect(throws: SocketError.invalidArgument) { try socket.connect(to: SocketAddress(.any, 9)) }
        try socket.bind(port: 7)
        #expect(throws: SocketError.invalidArgument) { try socket.bind(port: 8) }
    }

    @Test func permissionDeniedForBroadcastWithoutOptIn() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        #expect(throws: SocketError.permissionDenied) { try socket.send([1], to: SocketAddress(.broadcast, 9)) }
        socket.allowsBroadcast = true
        try socket.send([1], to: SocketAddress(.broadcast, 9))
    }

    @Test func addressesAreReported() throws {
        let live = LiveHost()
        let socket = UDPSocket(host: live.host)
        #expect(socket.localAddress == nil && socket.remoteAddress == nil)
        try socket.connect(to: peer)
        #expect(socket.remoteAddress == peer)
        #expect(socket.localAddress.map { NetworkStack.ephemeralPorts.contains($0.port) } == true)
        socket.disconnect()
        #expect(socket.remoteAddress == nil)
    }
}
