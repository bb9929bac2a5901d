import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

@Suite struct StackUDPTests {
    @Test func datagramIsQueuedAndSignalsReadableOnce() throws {
        let h = Harness()
        let (endpoint, log) = try h.boundEndpoint(port: 7)
        h.receive(Captured.udpRequest)
        h.receive(Captured.udpRequest)
        #expect(log.events == [.readable])
        #expect(endpoint.readiness.contains(.readable))
        let datagram = try h.stack.receive(from: endpoint)
        #expect(datagram == ReceivedDatagram(source: FrameBuilder.peerIP, sourcePort: 35789,
                                             destination: FrameBuilder.stackIP, payload: Array("hello\n".utf8)))
        _ = try h.stack.receive(from: endpoint)
        #expect(throws: SocketError.wouldBlock) { try h.stack.receive(from: endpoint) }
        #expect(!endpoint.readiness.contains(.readable))
    }

    @Test func echoOfCapturedDatagramIsByteForByte() throws {
        // The capture's stack had sent three echo replies first: IP id 4.
        let h = Harness()
        h.receive(Captured.arpRequest)
        for _ in 0..<3 { h.receive(Captured.echoRequest) }
        _ = h.sent()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        h.receive(Captured.udpRequest)
        let datagram = try h.stack.receive(from: endpoint)
        try h.send(datagram.payload, from: endpoint, to: datagram.source, port: datagram.sourcePort)
        #expect(h.sent() == [Captured.udpReply])
    }

    @Test func datagramToUnboundPortIsDropped() {
        let h = Harness()
        h.receive(Captured.udpRequest)
        #expect(h.counter(.udpDropNoPort) == 1)
    }

    @Test func badChecksumIsDropped() throws {
        let h = Harness()
        let (endpoint, log) = try h.boundEndpoint(port: 7)
        var frame = Captured.udpRequest
        frame[47] ^= 0x01
        h.receive(frame)
        #expect(h.counter(.udpDropBadChecksum) == 1)
        #expect(log.events.isEmpty)
        #expect(endpoint.queuedDatagrams == 0)
    }

    @Test func lengthFieldLargerThanPacketIsDropped() throws {
        let h = Harness()
        _ = try h.boundEndpoint(port: 7)
        var datagram = FrameBuilder.udp(sourcePort: 1, destinationPort: 7, payload: [1, 2, 3, 4])
        datagram[5] = 40
        h.receive(FrameBuilder.ethernet(type: .ipv4, payload: FrameBuilder.ipv4(proto: .udp, payload: datagram)))
        #expect(h.counter(.udpDropTruncated) == 1)
    }

    @Test func receiveQueueIsBoundedInDatagrams() throws {
        let h = Harness { $0.udpReceiveQueueDatagrams = 2 }
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        for _ in 0..<5 { h.receive(Captured.udpRequest) }
        #expect(endpoint.queuedDatagrams == 2)
        #expect(h.counter(.udpDropQueueFull) == 3)
    }

    @Test func receiveQueueIsBoundedInBytes() throws {
        let h = Harness { $0.udpReceiveQueueBytes = 100 }
        let (endpoint, _) = try h.boundEndpoint(port: 9)
        for _ in 0..<3 { h.receive(FrameBuilder.udpFrame(destinationPort: 9, payload: [UInt8](repeating: 1, count: 40))) }
        #expect(endpoint.queuedDatagrams == 2)
        #expect(h.counter(.udpDropQueueFull) == 1)
    }

    @Test func receiveBufferSizeSetsTheByteBoundWithinItsLimits() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 9)
        endpoint.receiveBufferBytes = 2048
        #expect(endpoint.receiveBufferBytes == 2048)
        // 33 datagrams of 64 bytes: 32 fit in 2048 bytes, the 33rd is dropped and counted.
        for _ in 0..<33 { h.receive(FrameBuilder.udpFrame(destinationPort: 9, payload: [UInt8](repeating: 1, count: 64))) }
        #expect(endpoint.queuedDatagrams == 32)
        #expect(h.counter(.udpDropQueueFull) == 1)
        endpoint.receiveBufferBytes = 1
        #expect(endpoint.receiveBufferBytes == UDPEndpoint.receiveBufferLimits.lowerBound)
        endpoint.receiveBufferBytes = Int.max
        #expect(endpoint.receiveBufferBytes == UDPEndpoint.receiveBufferLimits.upperBound)
        #expect(endpoint.queuedDatagrams == 32)  // lowering and raising the bound keeps what is queued
    }

    /// A datagram larger than the receive buffer still reaches an empty
    /// queue, as on Linux (a small SO_RCVBUF must not make a socket deaf to
    /// big datagrams); behind it the byte bound applies again.
    @Test func anEmptyQueueTakesOneDatagramLargerThanItsBuffer() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        endpoint.receiveBufferBytes = 2048
        let big = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        let datagram = FrameBuilder.ipv4(proto: .udp, payload: FrameBuilder.udp(sourcePort: 1, destinationPort: 7, payload: big))
        for frame in FrameBuilder.fragments(of: datagram, size: 1480) { h.receive(frame) }
        h.receive(FrameBuilder.udpFrame(sourcePort: 2, destinationPort: 7, payload: [1]))
        #expect(endpoint.queuedDatagrams == 1)
        #expect(h.counter(.udpDropQueueFull) == 1)
        #expect(try h.stack.receive(from: endpoint).payload == big)
    }

    @Test func bindingABoundPortFailsWithAddressInUse() throws {
        let h = Harness()
        _ = try h.boundEndpoint(port: 7)
        #expect(throws: SocketError.addressInUse) { try h.boundEndpoint(port: 7) }
    }

    @Test func bindingAForeignAddressFails() {
        let h = Harness()
        #expect(throws: SocketError.addressNotAvailable) {
            try h.stack.bind(h.stack.openUDP(), address: IPv4Address(10, 0, 0, 1), port: 7)
        }
    }

    @Test func portZeroAndFirstSendPickEphemeralPorts() throws {
        let h = Harness()
        h.learnPeer()
        let a = h.stack.openUDP()
        try h.stack.bind(a, port: 0)
        #expect(NetworkStack.ephemeralPorts.contains(a.localPort))
        let b = h.stack.openUDP()
        try h.send([1], from: b, port: 9)
        #expect(NetworkStack.ephemeralPorts.contains(b.localPort) && b.localPort != a.localPort)
    }

    @Test func sendOffLinkWithoutGatewayIsNetworkUnreachable() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        #expect(throws: SocketError.networkUnreachable) { try h.send([1], from: endpoint, to: IPv4Address(198, 51, 100, 1), port: 9) }
        #expect(h.sent().isEmpty)
    }

    @Test func sendOffLinkGoesThroughTheGateway() throws {
        let h = Harness { $0.gateway = FrameBuilder.peerIP }
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.send([1], from: endpoint, to: IPv4Address(198, 51, 100, 1), port: 9)
        let frames = h.sent()
        try #require(frames.count == 1)
        #expect(Array(frames[0][0..<6]) == FrameBuilder.peerMAC.octets)
        #expect(Array(frames[0][30..<34]) == [198, 51, 100, 1])
    }

    @Test func broadcastNeedsOptIn() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        #expect(throws: SocketError.permissionDenied) { try h.send([1], from: endpoint, to: .broadcast, port: 9) }
        endpoint.allowsBroadcast = true
        try h.send([1], from: endpoint, to: .broadcast, port: 9)
        #expect(h.sent().first.map { Array($0[0..<6]) } == MACAddress.broadcast.octets)
    }

    @Test func fullLinkMakesSendWouldBlock() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        h.sink.limit = 0
        #expect(throws: SocketError.wouldBlock) { try h.send([1], from: endpoint, port: 9) }
        #expect(h.counter(.udpTxDatagrams) == 0)
    }

    @Test func applicationDatagramsLeaveTheTransmitReserveToTheStacksOwnFrames() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        let reserve = h.stack.configuration.transmitReserveFrames
        #expect(reserve > 0)
        h.sink.limit = reserve
        #expect(throws: SocketError.wouldBlock) { try h.send([1], from: endpoint, port: 9) }
        #expect(!h.stack.readiness(of: endpoint).contains(.writable))
        // A ping is still answered from the reserve.
        h.receive(Captured.echoRequest)
        #expect(h.counter(.icmpTxEchoReplies) == 1)
        #expect(h.sent().count == 1)
        h.sink.limit = reserve + 1
        #expect(h.stack.readiness(of: endpoint).contains(.writable))
        try h.send([1], from: endpoint, port: 9)
        #expect(h.counter(.udpTxDatagrams) == 1)
    }

    @Test func closeFreesThePortAndSignalsClosed() throws {
        let h = Harness()
        let (endpoint, log) = try h.boundEndpoint(port: 7)
        h.stack.close(endpoint)
        #expect(log.events == [.closed])
        #expect(throws: SocketError.closed) { try h.stack.receive(from: endpoint) }
        _ = try h.boundEndpoint(port: 7)
    }
}

@Suite struct DatagramQueueTests {
    @Test func receiveIntoABufferCopiesWithoutLosingTheTrueLength() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 9)
        h.receive(FrameBuilder.udpFrame(destinationPort: 9, payload: Array(0..<100)))
        var small = [UInt8](repeating: 0, count: 10)
        let info = try small.withUnsafeMutableBytes { try h.stack.receive(from: endpoint, into: $0) }
        #expect(info.length == 100 && info.sourcePort == 40000 && info.source == FrameBuilder.peerIP)
        #expect(small == Array(0..<10))
        #expect(endpoint.queuedDatagrams == 0 && endpoint.queuedBytes == 0)
    }

    @Test func slotsAreReusedInOrderAcrossWrapAround() throws {
        let h = Harness { $0.udpReceiveQueueDatagrams = 3 }
        let (endpoint, _) = try h.boundEndpoint(port: 9)
        for round in 0..<10 {
            for i in 0..<3 { h.receive(FrameBuilder.udpFrame(destinationPort: 9, payload: [UInt8(round), UInt8(i)])) }
            for i in 0..<3 { #expect(try h.stack.receive(from: endpoint).payload == [UInt8(round), UInt8(i)]) }
        }
        #expect(h.counter(.udpDropQueueFull) == 0)
    }

    @Test func largeAndSmallDatagramsKeepTheirOrder() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        let big = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        let datagram = FrameBuilder.ipv4(proto: .udp, payload: FrameBuilder.udp(sourcePort: 1, destinationPort: 7, payload: big))
        h.receive(FrameBuilder.udpFrame(sourcePort: 2, destinationPort: 7, payload: [1]))
        for frame in FrameBuilder.fragments(of: datagram, size: 1480) { h.receive(frame) }
        h.receive(FrameBuilder.udpFrame(sourcePort: 3, destinationPort: 7, payload: [3]))
        #expect(try h.stack.receive(from: endpoint).payload == [1])
        #expect(try h.stack.receive(from: endpoint).payload == big)
        #expect(try h.stack.receive(from: endpoint).payload == [3])
    }
}

@Suite struct DatagramMetadataTests {
    @Test func aDatagramKeepsItsTTLTOSDestinationAndArrivalInstant() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        let udp = FrameBuilder.udp(sourcePort: 4000, destinationPort: 7, payload: [1, 2])
        var packet = [UInt8](repeating: 0, count: IPv4Header.length) + udp
        packet.withUnsafeMutableBytes {
            IPv4Header(typeOfService: 0xB8, payloadLength: udp.count, identification: 7, ttl: 9, proto: .udp,
                       source: FrameBuilder.peerIP, destination: FrameBuilder.stackIP).emit(into: $0)
        }
        h.receive(FrameBuilder.ethernet(type: .ipv4, payload: packet))
        var buffer = [UInt8](repeating: 0, count: 8)
        let info = try buffer.withUnsafeMutableBytes { try h.stack.receive(from: endpoint, into: $0) }
        #expect(info == DatagramInfo(source: FrameBuilder.peerIP, sourcePort: 4000, destination: FrameBuilder.stackIP,
                                     length: 2, timeToLive: 9, typeOfService: 0xB8, receivedAt: h.now))
    }

    @Test func theSocketsTTLAndTOSAndPerDatagramOverridesReachTheWire() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        endpoint.timeToLive = 33
        endpoint.typeOfService = 0x10
        try h.send([1], from: endpoint, port: 9)
        let first = try #require(h.sent().first)
        #expect(first[15] == 0x10 && first[22] == 33)
        try h.send([2], from: endpoint, port: 9,
                   options: DatagramSendOptions(source: FrameBuilder.stackIP, timeToLive: 5, typeOfService: 0x20))
        let second = try #require(h.sent().first)
        #expect(second[15] == 0x20 && second[22] == 5)
        // A source that is not ours: EINVAL, as Linux without IP_TRANSPARENT.
        #expect(throws: SocketError.invalidArgument) {
            try h.send([3], from: endpoint, port: 9, options: DatagramSendOptions(source: IPv4Address(192, 0, 2, 99)))
        }
    }

    @Test func freeBindAllowsAForeignAddress() throws {
        let h = Harness()
        let endpoint = h.stack.openUDP()
        #expect(throws: SocketError.addressNotAvailable) { try h.stack.bind(endpoint, address: IPv4Address(198, 51, 100, 1), port: 53) }
        endpoint.freeBind = true
        try h.stack.bind(endpoint, address: IPv4Address(198, 51, 100, 1), port: 53)
        #expect(endpoint.localAddress == IPv4Address(198, 51, 100, 1))
    }
}
