import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

@Suite struct ICMPErrorTests {
    /// The IPv4 frames (not ARP) among those sent.
    func ipFrames(_ frames: [[UInt8]]) -> [[UInt8]] { frames.filter { $0[12] == 0x08 && $0[13] == 0x00 } }

    @Test func closedPortGetsPortUnreachableQuotingHeaderAndEightBytes() throws {
        let h = Harness()
        h.receive(Captured.arpRequest)
        _ = h.sent()
        h.receive(Captured.udpRequest)
        let frames = h.sent()
        try #require(frames.count == 1)
        // Ethernet + IP (id 1, proto ICMP) + ICMP type 3 code 3, unused 0, quoting the
        // request's IP header and the first 8 bytes of its UDP datagram.
        var expectedICMP = hex("0303 0000 0000 0000") + Array(Captured.udpRequest[14..<42])
        let checksum = expectedICMP.withUnsafeBytes { InternetChecksum.compute($0) }
        expectedICMP[2] = UInt8(checksum >> 8)
        expectedICMP[3] = UInt8(checksum & 0xFF)
        #expect(Array(frames[0][34...]) == expectedICMP)
        try frames[0].withUnsafeBytes { raw in
            let ip = try IPv4Header(IPv4PacketView(EthernetFrameView(raw).payload))
            #expect(ip.source == FrameBuilder.stackIP && ip.destination == FrameBuilder.peerIP)
            #expect(ip.proto == .icmp && ip.ttl == 64)
        }
        #expect(h.counter(.icmpTxDestinationUnreachable) == 1)
    }

    @Test func unknownProtocolGetsProtocolUnreachable() throws {
        let h = Harness()
        h.learnPeer()
        h.receive(FrameBuilder.ethernet(type: .ipv4, payload: FrameBuilder.ipv4(proto: IPProtocol(rawValue: 132), payload: [1, 2, 3, 4])))
        let frames = h.sent()
        try #require(frames.count == 1)
        #expect(frames[0][34] == 3 && frames[0][35] == 2)
    }

    @Test func noErrorForADatagramToABroadcastAddress() {
        let h = Harness()
        h.learnPeer()
        h.receive(FrameBuilder.udpFrame(destinationPort: 9, payload: [1], destination: IPv4Address(192, 0, 2, 255),
                                        ethernetDestination: .broadcast))
        h.receive(FrameBuilder.udpFrame(destinationPort: 9, payload: [1], destination: .broadcast, ethernetDestination: .broadcast))
        #expect(h.sent().isEmpty)
        #expect(h.counter(.udpDropNoPort) == 2)
        #expect(h.counter(.icmpTxErrorsSuppressed) == 2)
    }

    @Test func noErrorForADatagramSentAsALinkLayerBroadcast() {
        let h = Harness()
        h.learnPeer()
        h.receive(FrameBuilder.udpFrame(destinationPort: 9, payload: [1], ethernetDestination: .broadcast))
        #expect(h.sent().isEmpty)
        #expect(h.counter(.icmpTxErrorsSuppressed) == 1)
    }

    /// The rule function itself, for the cases no input path reaches with
    /// that packet alone (the other rules are also checked end to end above).
    func allowed(_ packet: [UInt8], linkBroadcast: Bool = false) throws -> Bool {
        let h = Harness()
        return try packet.withUnsafeBytes { try h.stack.shouldSendICMPError(about: IPv4PacketView($0), linkBroadcast: linkBroadcast) }
    }

    @Test func noErrorAboutAnICMPError() throws {
        let unreachable = FrameBuilder.ipv4(proto: .icmp, payload: FrameBuilder.icmp(type: 3, code: 3, payload: [UInt8](repeating: 0, count: 28)))
        let timeExceeded = FrameBuilder.ipv4(proto: .icmp, payload: FrameBuilder.icmp(type: 11, payload: [UInt8](repeating: 0, count: 28)))
        let echo = FrameBuilder.ipv4(proto: .icmp, payload: FrameBuilder.icmp(type: 8, payload: [1]))
        #expect(try !allowed(unreachable))
        #expect(try !allowed(timeExceeded))
        #expect(try allowed(echo))
    }

    @Test func noErrorAboutANonInitialFragment() throws {
        let fragment = FrameBuilder.ipv4(proto: .udp, payload: [UInt8](repeating: 0, count: 16), fragmentOffset: 1480)
        let first = FrameBuilder.ipv4(proto: .udp, payload: [UInt8](repeating: 0, count: 16), moreFragments: true)
        #expect(try !allowed(fragment))
        #expect(try allowed(first))
    }

    @Test(arguments: [IPv4Address.any, .broadcast, IPv4Address(224, 0, 0, 9), IPv4Address(127, 0, 0, 1),
                      IPv4Address(192, 0, 2, 255), IPv4Address(250, 1, 1, 1)])
    func noErrorToASourceThatIsNotOneHost(_ source: IPv4Address) throws {
        #expect(try !allowed(FrameBuilder.ipv4(source: source, proto: .udp, payload: [UInt8](repeating: 0, count: 9))))
    }

    @Test func errorsAreRateLimited() {
        let h = Harness {
            $0.icmpErrorBurst = 5
            $0.icmpErrorsPerSecond = 10
        }
        h.learnPeer()
        for _ in 0..<8 { h.receive(FrameBuilder.udpFrame(destinationPort: 9, payload: [1])) }
        #expect(ipFrames(h.sent()).count == 5)
        #expect(h.counter(.icmpTxErrorsRateLimited) == 3)
        h.advance(seconds: 0.2)  // two tokens
        for _ in 0..<3 { h.receive(FrameBuilder.udpFrame(destinationPort: 9, payload: [1])) }
        #expect(ipFrames(h.sent()).count == 2)
    }

    /// An ICMP error from the peer quoting a datagram the stack sent from
    /// `sourcePort` to the peer's `destinationPort`.
    func unreachable(code: UInt8, sourcePort: UInt16, destinationPort: UInt16) -> [UInt8] {
        let sent = FrameBuilder.ipv4(source: FrameBuilder.stackIP, destination: FrameBuilder.peerIP, proto: .udp,
                                     payload: FrameBuilder.udp(sourcePort: sourcePort, destinationPort: destinationPort, payload: [1, 2, 3],
                                                               source: FrameBuilder.stackIP, destination: FrameBuilder.peerIP))
        return FrameBuilder.ethernet(type: .ipv4, payload: FrameBuilder.ipv4(
            proto: .icmp, payload: FrameBuilder.icmp(type: 3, code: code, payload: Array(sent[0..<28]))))
    }

    @Test func portUnreachableIsDeliveredToTheConnectedSocketAsConnectionRefused() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, log) = try h.boundEndpoint(port: 5000)
        try h.stack.connect(endpoint, to: FrameBuilder.peerIP, port: 9)
        try h.send([1, 2, 3], from: endpoint, port: 9)
        h.receive(unreachable(code: 3, sourcePort: 5000, destinationPort: 9))
        #expect(log.events == [.error])
        #expect(endpoint.readiness.contains(.error))
        #expect(throws: SocketError.connectionRefused) { try h.stack.receive(from: endpoint) }
        #expect(throws: SocketError.wouldBlock) { try h.stack.receive(from: endpoint) }  // reported once
        #expect(h.counter(.icmpRxErrorsDelivered) == 1)
    }

    @Test(arguments: [(UInt8(0), SocketError.networkUnreachable), (1, .hostUnreachable), (4, .messageTooLong)])
    func unreachableCodesMapToPOSIXErrors(code: UInt8, error: SocketError) throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.stack.connect(endpoint, to: FrameBuilder.peerIP, port: 9)
        h.receive(unreachable(code: code, sourcePort: 5000, destinationPort: 9))
        #expect(throws: error) { try h.stack.receive(from: endpoint) }
    }

    @Test func unconnectedSocketIsNotToldAndOtherPeersDoNotMatch() throws {
        let h = Harness()
        let (unconnected, log) = try h.boundEndpoint(port: 5000)
        let (connected, connectedLog) = try h.boundEndpoint(port: 5001)
        try h.stack.connect(connected, to: FrameBuilder.peerIP, port: 10)
        h.receive(unreachable(code: 3, sourcePort: 5000, destinationPort: 9))
        h.receive(unreachable(code: 3, sourcePort: 5001, destinationPort: 9))  // not its peer's port
        #expect(log.events.isEmpty && connectedLog.events.isEmpty)
        #expect(unconnected.pendingError == nil && connected.pendingError == nil)
        #expect(h.counter(.icmpRxErrorsUnmatched) == 2)
    }

    @Test func truncatedQuoteIsDropped() {
        let h = Harness()
        h.receive(FrameBuilder.ethernet(type: .ipv4, payload: FrameBuilder.ipv4(
            proto: .icmp, payload: FrameBuilder.icmp(type: 3, code: 3, payload: [0x45, 0, 0]))))
        #expect(h.counter(.icmpDropBadQuote) == 1)
    }
}

@Suite struct ErrorQueueTests {
    /// A port unreachable from 192.0.2.1 quoting a datagram we sent from `port` to 192.0.2.1:9.
    static func portUnreachable(from port: UInt16, payload: [UInt8]) -> [UInt8] {
        let sent = FrameBuilder.ipv4(source: FrameBuilder.stackIP, destination: FrameBuilder.peerIP, proto: .udp,
                                     payload: FrameBuilder.udp(sourcePort: port, destinationPort: 9, payload: payload,
                                                               source: FrameBuilder.stackIP, destination: FrameBuilder.peerIP))
        return FrameBuilder.ethernet(type: .ipv4, payload: FrameBuilder.ipv4(proto: .icmp,
            payload: FrameBuilder.icmp(type: ICMPv4Type.destinationUnreachable, code: ICMPv4UnreachableCode.port, payload: sent)))
    }

    @Test func anUnconnectedSocketWithRecvErrGetsTheDetailsAndThePendingError() throws {
        let h = Harness()
        let (endpoint, log) = try h.boundEndpoint(port: 4000)
        h.receive(Self.portUnreachable(from: 4000, payload: [1, 2, 3]))
        #expect(endpoint.errorQueue.isEmpty && endpoint.pendingError == nil)  // without IP_RECVERR: ignored (RFC 1122 4.1.3.3)
        endpoint.receivesErrors = true
        h.receive(Self.portUnreachable(from: 4000, payload: [1, 2, 3]))
        #expect(log.events.contains(.error))
        #expect(endpoint.readiness.contains(.error))
        let report = try #require(endpoint.takeQueuedError())
        #expect(report == ICMPErrorReport(error: .connectionRefused, type: 3, code: 3, info: 0, offender: FrameBuilder.peerIP,
                                          destination: FrameBuilder.peerIP, destinationPort: 9, payload: [1, 2, 3]))
        // Reading the queue clears the pending error it set, as on Linux.
        #expect(endpoint.pendingError == nil && !endpoint.readiness.contains(.error))
    }

    @Test func theErrorQueueIsBoundedAndCountsWhatItDrops() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 4000)
        endpoint.receivesErrors = true
        for _ in 0..<(UDPEndpoint.errorQueueLimit + 3) { h.receive(Self.portUnreachable(from: 4000, payload: [7])) }
        #expect(endpoint.errorQueue.count == UDPEndpoint.errorQueueLimit)
        #expect(h.counter(.udpDropErrorQueueFull) == 3)
    }
}
