import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

@Suite struct UDPDemuxTests {
    func sharedEndpoint(_ h: Harness, port: UInt16, address: IPv4Address = .any) throws -> UDPEndpoint {
        let endpoint = h.stack.openUDP()
        endpoint.reuseAddress = true
        try h.stack.bind(endpoint, address: address, port: port)
        return endpoint
    }

    @Test func connectedThenBoundAddressThenWildcard() throws {
        let h = Harness()
        let wildcard = try sharedEndpoint(h, port: 5000)
        let bound = try sharedEndpoint(h, port: 5000, address: FrameBuilder.stackIP)
        let connected = try sharedEndpoint(h, port: 5000)
        try h.stack.connect(connected, to: FrameBuilder.peerIP, port: 6000)

        h.receive(FrameBuilder.udpFrame(sourcePort: 6000, destinationPort: 5000, payload: [1]))
        h.receive(FrameBuilder.udpFrame(sourcePort: 6001, destinationPort: 5000, payload: [2]))
        #expect(try h.stack.receive(from: connected).payload == [1])
        #expect(try h.stack.receive(from: bound).payload == [2])
        h.stack.close(bound)
        h.receive(FrameBuilder.udpFrame(sourcePort: 6001, destinationPort: 5000, payload: [3]))
        #expect(try h.stack.receive(from: wildcard).payload == [3])
    }

    /// The demultiplexer remembers the last port's only socket; a second
    /// socket on the port, a connect or a close must be seen at once.
    @Test func theRememberedSocketGivesWayToChanges() throws {
        let h = Harness()
        let first = try sharedEndpoint(h, port: 5000)
        h.receive(FrameBuilder.udpFrame(sourcePort: 6000, destinationPort: 5000, payload: [1]))
        #expect(try h.stack.receive(from: first).payload == [1])
        // A second socket, connected to the peer, now gets the peer's datagrams.
        let second = try sharedEndpoint(h, port: 5000)
        try h.stack.connect(second, to: FrameBuilder.peerIP, port: 6000)
        h.receive(FrameBuilder.udpFrame(sourcePort: 6000, destinationPort: 5000, payload: [2]))
        #expect(try h.stack.receive(from: second).payload == [2])
        #expect(first.queuedDatagrams == 0)
        // The first socket connects elsewhere: it no longer hears this peer's other port.
        h.stack.close(second)
        try h.stack.connect(first, to: FrameBuilder.peerIP, port: 7000)
        h.receive(FrameBuilder.udpFrame(sourcePort: 6000, destinationPort: 5000, payload: [3]))
        #expect(first.queuedDatagrams == 0)
        #expect(h.counter(.udpDropNoPort) == 1)
        // Closed, the port answers port unreachable.
        h.stack.close(first)
        h.receive(FrameBuilder.udpFrame(sourcePort: 7000, destinationPort: 5000, payload: [4]))
        #expect(h.counter(.udpDropNoPort) == 2)
    }

    @Test func connectedSocketHearsOnlyItsPeer() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.stack.connect(endpoint, to: FrameBuilder.peerIP, port: 6000)
        h.receive(FrameBuilder.udpFrame(sourcePort: 6001, destinationPort: 5000, payload: [1]))
        #expect(endpoint.queuedDatagrams == 0)
        #expect(h.counter(.udpDropNoPort) == 1)
    }

    @Test func broadcastReachesEverySocketOnThePort() throws {
        let h = Harness()
        let a = try sharedEndpoint(h, port: 5000)
        let b = try sharedEndpoint(h, port: 5000)
        h.receive(FrameBuilder.udpFrame(destinationPort: 5000, payload: [7], destination: .broadcast, ethernetDestination: .broadcast))
        #expect(try h.stack.receive(from: a).payload == [7])
        #expect(try h.stack.receive(from: b).payload == [7])
    }

    @Test func sharingAPortNeedsReuseOnBothSockets() throws {
        let h = Harness()
        _ = try sharedEndpoint(h, port: 5000)
        #expect(throws: SocketError.addressInUse) { try h.stack.bind(h.stack.openUDP(), port: 5000) }
        let (_, _) = try h.boundEndpoint(port: 5001)
        let late = h.stack.openUDP()
        late.reuseAddress = true
        #expect(throws: SocketError.addressInUse) { try h.stack.bind(late, port: 5001) }
    }

    @Test func connectedSendNeedsNoDestinationAndUnconnectedDoes() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        let result: Result<Void, SocketError> = [UInt8(1)].withUnsafeBytes { bytes in
            do throws(SocketError) { try h.stack.send(bytes, from: endpoint, to: nil, now: h.now); return .success(()) }
            catch { return .failure(error) }
        }
        #expect(throws: SocketError.notConnected) { try result.get() }
        try h.stack.connect(endpoint, to: FrameBuilder.peerIP, port: 6000)
        [UInt8(1)].withUnsafeBytes { bytes in
            _ = try? h.stack.send(bytes, from: endpoint, to: nil, now: h.now)
        }
        let frames = h.sent()
        #expect(frames.count == 1 && frames[0][36] == 0x17 && frames[0][37] == 0x70)  // to port 6000
    }

    @Test func connectBindsAnEphemeralPortAndDisconnectForgetsThePeer() throws {
        let h = Harness()
        let endpoint = h.stack.openUDP()
        try h.stack.connect(endpoint, to: FrameBuilder.peerIP, port: 6000)
        #expect(NetworkStack.ephemeralPorts.contains(endpoint.localPort))
        try h.stack.connect(endpoint, to: .any, port: 0)
        #expect(endpoint.remote == nil)
    }

    @Test func connectToAnUnroutableAddressFails() {
        let h = Harness()
        #expect(throws: SocketError.networkUnreachable) { try h.stack.connect(h.stack.openUDP(), to: IPv4Address(8, 8, 8, 8), port: 53) }
    }
}

/// Datagrams a socket sends to the stack's own address.
@Suite struct LoopbackTests {
    /// They reach the socket bound there without touching the link (no ARP
    /// for ourselves), from our address and the sender's port, as on Linux.
    @Test func aDatagramToOurOwnAddressIsDeliveredLocally() throws {
        let h = Harness()
        let (receiver, _) = try h.boundEndpoint(port: 5001)
        let (sender, _) = try h.boundEndpoint(port: 5000)
        try h.send([1, 2, 3], from: sender, to: FrameBuilder.stackIP, port: 5001)
        let datagram = try h.stack.receive(from: receiver)
        #expect(datagram.payload == [1, 2, 3])
        #expect(datagram.source == FrameBuilder.stackIP && datagram.sourcePort == 5000)
        #expect(h.sent().isEmpty, "nothing went on the link")
        #expect(h.counter(.ipv4TxLoopedBack) == 1)
        #expect(h.counter(.arpTxRequests) == 0)
    }

    /// To a closed port of our own, a connected socket learns it as it
    /// would from a peer: connection refused (the ICMP error loops back too).
    @Test func aClosedPortOfOurOwnRefusesAConnectedSocket() throws {
        let h = Harness()
        let (sender, _) = try h.boundEndpoint(port: 5000)
        try h.stack.connect(sender, to: FrameBuilder.stackIP, port: 5999)
        try [UInt8]([9]).withUnsafeBytes { try h.stack.send($0, from: sender, to: nil, now: h.now) }
        #expect(h.counter(.udpDropNoPort) == 1)
        #expect(throws: SocketError.connectionRefused) { try h.stack.receive(from: sender) }
        #expect(h.sent().isEmpty)
    }
}
