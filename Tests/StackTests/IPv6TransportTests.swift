import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

/// IPv6 beyond the first steps: UDP over IPv6 and dual-stack sockets,
/// fragmentation and reassembly, ICMPv6 errors, the neighbour cache's
/// states, path MTU and SLAAC. Frames byte for byte where the wire matters.
@Suite struct IPv6TransportTests {
    static let ours = IPv6Address("2001:db8::2")!
    static let peer = IPv6Address("2001:db8::1")!

    /// A stack holding 2001:db8::2 that knows the peer's MAC (it solicited us).
    static func ready(_ configure: (inout StackConfiguration) -> Void = { _ in }) -> Harness {
        let h = Harness { $0.ipv6Addresses = [ours]; configure(&$0) }
        h.stack.start(now: h.now)
        let solicitation: [UInt8] = [0, 0, 0, 0] + IPv6Tests.bytes(ours) + [1, 1] + FrameBuilder.peerMAC.octets
        h.receive(IPv6Tests.frame(to: ours.solicitedNode, mac: ours.solicitedNode.multicastMAC,
                                  icmp: ICMPv6Type.neighborSolicitation, body: solicitation, source: peer))
        _ = h.sent()
        return h
    }

    /// An Ethernet frame carrying `payload` after `headers` (extension headers), next header `next`.
    static func packet(_ next: UInt8, _ payload: [UInt8], headers: [UInt8] = [], source: IPv6Address = peer,
                       destination: IPv6Address = ours, hopLimit: UInt8 = 64) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: IPv6Header.length) + headers + payload
        packet.withUnsafeMutableBytes {
            IPv6Header(payloadLength: headers.count + payload.count, nextHeader: next, hopLimit: hopLimit,
                       source: source, destination: destination).emit(into: $0)
        }
        return FrameBuilder.ethernet(destination: FrameBuilder.stackMAC, type: .ipv6, payload: packet)
    }

    /// IPv6 frames sent since the last look (the ARP announcements left out).
    static func sent6(_ h: Harness) -> [[UInt8]] { h.sent().filter { $0[12] == 0x86 && $0[13] == 0xDD } }

    static func udp(_ payload: [UInt8], from sourcePort: UInt16, to port: UInt16, source: IPv6Address = peer,
                    destination: IPv6Address = ours) -> [UInt8] {
        var datagram = [UInt8](repeating: 0, count: UDPHeader.length) + payload
        datagram.withUnsafeMutableBytes {
            UDPHeader(sourcePort: sourcePort, destinationPort: port, payloadLength: payload.count)
                .emit(intoDatagram: $0, source: source, destination: destination)
        }
        return datagram
    }

    func send(_ h: Harness, _ payload: [UInt8], from endpoint: UDPEndpoint, to address: SocketAddress) throws(SocketError) {
        let result: Result<Void, SocketError> = payload.withUnsafeBytes { bytes in
            do throws(SocketError) {
                try h.stack.send(bytes, from: endpoint, to: address, now: h.now)
                return .success(())
            } catch { return .failure(error) }
        }
        try result.get()
    }

    @Test func aDualStackSocketTakesBothFamiliesAndAnswersEachInItsOwn() throws {
        let h = Self.ready()
        h.learnPeer()
        let socket = h.stack.openUDP(family: .ipv6)
        try h.stack.bind(socket, to: SocketAddress(IPv6Address.unspecified, 7))
        h.receive(Self.packet(IPv6NextHeader.udp, Self.udp(Array("six".utf8), from: 5000, to: 7)))
        h.receive(FrameBuilder.udpFrame(sourcePort: 5001, destinationPort: 7, payload: Array("four".utf8)))
        let first = try h.stack.receive(from: socket)
        let second = try h.stack.receive(from: socket)
        #expect(first.sourceAddress == SocketAddress(Self.peer, 5000) && first.payload == Array("six".utf8))
        #expect(second.sourceAddress == SocketAddress(FrameBuilder.peerIP, 5001) && second.payload == Array("four".utf8))
        try send(h, Array("six back".utf8), from: socket, to: first.sourceAddress)
        try send(h, Array("four back".utf8), from: socket, to: second.sourceAddress)
        let frames = h.sent()
        #expect(frames.count == 2)
        // The IPv6 answer byte for byte: to the peer's MAC, from 2001:db8::2 port 7, checksum over the pseudo-header.
        var expected = FrameBuilder.peerMAC.octets + FrameBuilder.stackMAC.octets + [0x86, 0xDD]
        expected += [0x60, 0, 0, 0, 0, 16, 17, 64] + IPv6Tests.bytes(Self.ours) + IPv6Tests.bytes(Self.peer)
        expected += Self.udp(Array("six back".utf8), from: 7, to: 5000, source: Self.ours, destination: Self.peer)
        #expect(frames[0] == expected)
        #expect(frames[1][12] == 0x08 && frames[1][13] == 0x00)
    }

    @Test func anIPv6OnlySocketLeavesIPv4ToAnIPv4SocketOnThePort() throws {
        let h = Self.ready()
        let six = h.stack.openUDP(family: .ipv6)
        six.v6Only = true
        try h.stack.bind(six, to: SocketAddress(IPv6Address.unspecified, 9000))
        let four = h.stack.openUDP()
        try h.stack.bind(four, port: 9000)  // no conflict: the families do not overlap
        let dual = h.stack.openUDP(family: .ipv6)
        #expect(throws: SocketError.addressInUse) { try h.stack.bind(dual, to: SocketAddress(IPv6Address.unspecified, 9000)) }
        h.learnPeer()
        h.receive(FrameBuilder.udpFrame(sourcePort: 1, destinationPort: 9000, payload: [4]))
        h.receive(Self.packet(IPv6NextHeader.udp, Self.udp([6], from: 1, to: 9000)))
        #expect(try h.stack.receive(from: four).payload == [4])
        #expect(try h.stack.receive(from: six).payload == [6])
        #expect(throws: SocketError.wouldBlock) { try h.stack.receive(from: six) }
    }

    @Test func aZeroChecksumIsDroppedAndAClosedPortAnswersPortUnreachable() throws {
        let h = Self.ready()
        var zero = Self.udp([1, 2, 3], from: 5000, to: 9)
        zero[6] = 0; zero[7] = 0
        h.receive(Self.packet(IPv6NextHeader.udp, zero))
        #expect(h.counter(.udpDropZeroChecksum) == 1 && h.sent().isEmpty)
        let probe = Self.packet(IPv6NextHeader.udp, Self.udp([1, 2, 3], from: 5000, to: 9))
        h.receive(probe)
        let error = try #require(h.sent().first)
        // Destination unreachable, code 4, unused, then the invoking packet whole.
        #expect(Array(error[54..<56]) == [ICMPv6Type.destinationUnreachable, 4] && Array(error[58..<62]) == [0, 0, 0, 0])
        #expect(Array(error[62...]) == Array(probe[14...]))
        #expect(Array(error[22..<38]) == IPv6Tests.bytes(Self.ours))
        #expect(h.counter(.icmpv6TxDestinationUnreachable) == 1)
    }

    @Test func aLargeDatagramLeavesInFragmentsThatReassembleToIt() throws {
        let h = Self.ready()
        let socket = h.stack.openUDP(family: .ipv6)
        let payload = (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try send(h, payload, from: socket, to: SocketAddress(Self.peer, 4000))
        let frames = h.sent()
        #expect(frames.count == 3)
        var reassembled = [UInt8]()
        var identification: [UInt8]?
        for (index, frame) in frames.enumerated() {
            #expect(frame.count <= EthernetHeader.length + 1500 && frame[20] == IPv6NextHeader.fragment)
            #expect(frame[54] == IPv6NextHeader.udp)
            let field = Int(frame[56]) << 8 | Int(frame[57])
            #expect(field & 0xFFF8 == reassembled.count && (field & 1 == 1) == (index < 2))
            if let identification { #expect(Array(frame[58..<62]) == identification) } else { identification = Array(frame[58..<62]) }
            reassembled += frame[62...]
        }
        #expect(reassembled == Self.udp(payload, from: socket.localPort, to: 4000, source: Self.ours, destination: Self.peer))
        #expect(h.counter(.ipv6TxFragmented) == 1)
        // Fed back to the stack as a peer's, the same fragments reassemble and reach a socket.
        let listener = h.stack.openUDP(family: .ipv6)
        try h.stack.bind(listener, to: SocketAddress(IPv6Address.unspecified, 4000))
        for frame in frames.reversed() {
            var packet = Array(frame[14...])
            packet.withUnsafeMutableBytes { Self.peer.write(to: $0, at: 8); Self.ours.write(to: $0, at: 24) }
            h.receive(FrameBuilder.ethernet(destination: FrameBuilder.stackMAC, type: .ipv6, payload: packet))
        }
        // The checksum was over ours→peer; swapping both addresses keeps the sum, so it still verifies.
        #expect(try h.stack.receive(from: listener).payload == payload)
        #expect(h.counter(.ipv6Reassembled) == 1)
    }

    @Test func anIncompleteDatagramExpiresAfterSixtySecondsWithTimeExceeded() throws {
        let h = Self.ready()
        let first = [IPv6NextHeader.udp, 0, 0, 1, 0, 0, 0x12, 0x34] + Self.udp([UInt8](repeating: 9, count: 24), from: 1, to: 2)
        let frame = Self.packet(IPv6NextHeader.fragment, first)
        h.receive(frame)
        #expect(h.stack.reassembly6.count == 1)
        h.advance(seconds: 59)
        #expect(Self.sent6(h).isEmpty)
        h.advance(seconds: 2)
        let error = try #require(Self.sent6(h).first)
        #expect(Array(error[54..<56]) == [ICMPv6Type.timeExceeded, 1] && Array(error[62...]) == Array(frame[14...]))
        #expect(h.counter(.ipv6DropReassemblyTimeout) == 1 && h.stack.reassembly6.count == 0)
        // Without the first fragment, no error (RFC 8200 4.5).
        h.receive(Self.packet(IPv6NextHeader.fragment, [IPv6NextHeader.udp, 0, 0, 16, 0, 0, 0x12, 0x35] + [UInt8](repeating: 1, count: 8)))
        h.advance(seconds: 61)
        // (The neighbour is probed meanwhile: the error made its entry delay, then probe.)
        #expect(!Self.sent6(h).contains { $0[54] < 128 } && h.counter(.ipv6DropReassemblyTimeout) == 2)
    }

    @Test func packetTooBigLowersThePathMTUButNeverBelow1280() throws {
        let h = Self.ready()
        let socket = h.stack.openUDP(family: .ipv6)
        let payload = [UInt8](repeating: 1, count: 1400)
        try send(h, payload, from: socket, to: SocketAddress(Self.peer, 4000))
        let sent = try #require(h.sent().first)
        #expect(sent.count == 14 + 40 + 8 + 1400)
        // A router says 1300: quoted is our packet's start.
        var body: [UInt8] = [0, 0, 0x05, 0x14] + Array(sent[14..<(14 + 1232)])
        var message = [ICMPv6Type.packetTooBig, 0, 0, 0] + body
        let router = IPv6Address("2001:db8::fe")!
        let sum = message.withUnsafeBytes { ICMPv6Type.checksum($0, source: router, destination: Self.ours) }
        message[2] = UInt8(sum >> 8); message[3] = UInt8(sum & 0xFF)
        h.receive(Self.packet(ICMPv6Type.nextHeader, message, source: router))
        #expect(h.counter(.ipv6PathMTUUpdates) == 1)
        try send(h, payload, from: socket, to: SocketAddress(Self.peer, 4000))
        let fragments = h.sent()
        #expect(fragments.count == 2 && fragments.allSatisfy { $0.count <= 14 + 1300 })
        // 1000 is below the minimum: 1280 is used.
        body[2] = 0x03; body[3] = 0xE8
        message = [ICMPv6Type.packetTooBig, 0, 0, 0] + body
        let sum2 = message.withUnsafeBytes { ICMPv6Type.checksum($0, source: router, destination: Self.ours) }
        message[2] = UInt8(sum2 >> 8); message[3] = UInt8(sum2 & 0xFF)
        h.receive(Self.packet(ICMPv6Type.nextHeader, message, source: router))
        try send(h, payload, from: socket, to: SocketAddress(Self.peer, 4000))
        #expect(h.sent().map(\.count).max() == 14 + 1280)
    }

    @Test func aStaleNeighbourIsProbedThenForgottenWhenItStaysSilent() throws {
        let h = Self.ready()
        #expect(h.stack.neighborCache[Self.peer]?.state == .stale)  // learnt from its solicitation
        let socket = h.stack.openUDP(family: .ipv6)
        try send(h, [1], from: socket, to: SocketAddress(Self.peer, 4000))
        #expect(Self.sent6(h).count == 1)  // sent at once to the stale MAC
        #expect(h.stack.neighborCache[Self.peer]?.state == .delay)
        h.advance(seconds: 5.1)
        // Delay over: a unicast solicitation to the cached MAC (RFC 4861 7.3.3).
        let probe = try #require(Self.sent6(h).first)
        #expect(Array(probe[0..<6]) == FrameBuilder.peerMAC.octets && probe[54] == ICMPv6Type.neighborSolicitation)
        #expect(Array(probe[38..<54]) == IPv6Tests.bytes(Self.peer))
        #expect(h.stack.neighborCache[Self.peer]?.state == .probe)
        h.advance(seconds: 1.1)
        h.advance(seconds: 1.1)
        #expect(Self.sent6(h).count == 2)
        h.advance(seconds: 1.1)
        #expect(h.stack.neighborCache[Self.peer] == nil)
        #expect(h.counter(.icmpv6ResolutionFailures) == 1)
    }

    @Test func aSolicitedAdvertisementMakesAProbedNeighbourReachableAgain() throws {
        let h = Self.ready()
        let socket = h.stack.openUDP(family: .ipv6)
        try send(h, [1], from: socket, to: SocketAddress(Self.peer, 4000))
        h.advance(seconds: 5.1)
        _ = h.sent()
        let advertisement: [UInt8] = [0x60, 0, 0, 0] + IPv6Tests.bytes(Self.peer)
        h.receive(IPv6Tests.frame(to: Self.ours, mac: FrameBuilder.stackMAC, icmp: ICMPv6Type.neighborAdvertisement,
                                  body: advertisement, source: Self.peer))
        #expect(h.stack.neighborCache[Self.peer]?.state == .reachable)
        h.advance(seconds: 10)
        #expect(h.sent().isEmpty)
    }

    @Test func unresolvedPacketsWaitBoundedAndAreDroppedCountedWhenNobodyAnswers() throws {
        let h = Self.ready { $0.arpPendingPacketsPerNeighbour = 2 }
        let socket = h.stack.openUDP(family: .ipv6)
        let stranger = IPv6Address("2001:db8::55")!
        for _ in 0..<4 { try send(h, [1], from: socket, to: SocketAddress(stranger, 4000)) }
        let solicitations = Self.sent6(h)
        #expect(solicitations.count == 1 && Array(solicitations[0][0..<6]) == stranger.solicitedNode.multicastMAC.octets)
        #expect(h.counter(.ipv6TxDropPendingQueueFull) == 2)
        h.advance(seconds: 1.1)
        h.advance(seconds: 1.1)
        #expect(Self.sent6(h).count == 2)  // retransmissions, 3 in all
        h.advance(seconds: 1.1)
        #expect(h.counter(.ipv6TxDropResolutionFailed) == 2 && h.stack.neighborCache[stranger] == nil)
    }

    @Test func aRouterAdvertisementGivesAnAddressForItsPrefixAndADefaultRoute() throws {
        let h = Harness { $0.ipv6Autoconfiguration = true; $0.duplicateAddressDetectionTransmits = 1 }
        h.stack.start(now: h.now)
        h.advance(seconds: 1.1)  // the link-local address checked
        let solicitations = h.sent().filter { $0.count > 54 && $0[54] == ICMPv6Type.routerSolicitation }
        #expect(solicitations.count == 1)
        // Router solicitation: to all routers, hop limit 255, with our MAC as option once we hold the link-local address.
        #expect(Array(solicitations[0][38..<54]) == IPv6Tests.bytes(.allRouters) && solicitations[0][21] == 255)
        let router = IPv6Address("fe80::1")!
        let prefix = IPv6Address("2001:db8:5::")!
        var option: [UInt8] = [3, 4, 64, 0xC0, 0, 0, 0x0E, 0x10, 0, 0, 0x07, 0x08, 0, 0, 0, 0] + IPv6Tests.bytes(prefix)
        option += [1, 1] + FrameBuilder.peerMAC.octets
        let advertisement: [UInt8] = [64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0] + option
        h.receive(IPv6Tests.frame(to: .allNodes, mac: IPv6Address.allNodes.multicastMAC, icmp: ICMPv6Type.routerAdvertisement,
                                  body: advertisement, source: router))
        let address = IPv6Address(prefix: prefix, interfaceIdentifier: h.stack.linkLocalAddress.low)
        #expect(address.description == "2001:db8:5::ff:fe00:2")
        #expect(h.stack.ipv6AddressStates[address] != nil && !h.stack.ipv6Addresses.contains(address))  // tentative first
        #expect(h.counter(.ipv6AddressesAutoconfigured) == 1)
        h.advance(seconds: 1.1)
        #expect(h.stack.ipv6Addresses.contains(address))
        #expect(h.stack.defaultRouter?.address == router && h.stack.neighborCache[router]?.isRouter == true)
        // Off-link destinations now go to the router's MAC.
        _ = h.sent()
        let socket = h.stack.openUDP(family: .ipv6)
        try send(h, [1], from: socket, to: SocketAddress(IPv6Address("2001:db8:99::1")!, 53))
        let out = try #require(h.sent().first)
        #expect(Array(out[0..<6]) == FrameBuilder.peerMAC.octets && Array(out[22..<38]) == IPv6Tests.bytes(address))
        // An MTU option lowers IPv6's link MTU; one below 1280 is refused.
        let withMTU: [UInt8] = [64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0] + [5, 1, 0, 0, 0, 0, 0x05, 0x14]
        h.receive(IPv6Tests.frame(to: .allNodes, mac: IPv6Address.allNodes.multicastMAC, icmp: ICMPv6Type.routerAdvertisement,
                                  body: withMTU, source: router))
        #expect(h.stack.ipv6LinkMTU == 1300)
        try send(h, [UInt8](repeating: 0, count: 1400), from: socket, to: SocketAddress(IPv6Address("2001:db8:99::1")!, 53))
        #expect(h.sent().map(\.count).max() == 14 + 1296)  // fragments: 1300 less the 8-byte fragment header's rounding
        let tooSmall: [UInt8] = [64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0] + [5, 1, 0, 0, 0, 0, 0x03, 0xE8]
        h.receive(IPv6Tests.frame(to: .allNodes, mac: IPv6Address.allNodes.multicastMAC, icmp: ICMPv6Type.routerAdvertisement,
                                  body: tooSmall, source: router))
        #expect(h.stack.ipv6LinkMTU == 1300 && h.counter(.icmpv6DropInvalidNeighborDiscovery) == 1)
        // An advertisement with a bad hop limit is ignored.
        h.receive(IPv6Tests.frame(to: .allNodes, mac: IPv6Address.allNodes.multicastMAC, icmp: ICMPv6Type.routerAdvertisement,
                                  body: advertisement, hopLimit: 64, source: router))
        #expect(h.counter(.icmpv6DropInvalidNeighborDiscovery) == 2)
    }

    @Test func anICMPv6ErrorIsQueuedForASocketThatAsksForErrors() throws {
        let h = Self.ready()
        let socket = h.stack.openUDP(family: .ipv6)
        socket.receivesErrors = true
        try send(h, Array("knock".utf8), from: socket, to: SocketAddress(Self.peer, 4000))
        let sent = try #require(h.sent().first)
        // The peer's port unreachable, quoting what we sent.
        var message = [ICMPv6Type.destinationUnreachable, 4, 0, 0, 0, 0, 0, 0] + Array(sent[14...])
        let sum = message.withUnsafeBytes { ICMPv6Type.checksum($0, source: Self.peer, destination: Self.ours) }
        message[2] = UInt8(sum >> 8); message[3] = UInt8(sum & 0xFF)
        h.receive(Self.packet(ICMPv6Type.nextHeader, message))
        let report = try #require(socket.takeQueuedError())
        #expect(report.error == .connectionRefused && report.type == 1 && report.code == 4)
        #expect(report.offender6 == Self.peer && report.destination6 == Self.peer && report.destinationPort == 4000)
        #expect(report.payload == Array("knock".utf8))
        #expect(h.counter(.icmpv6RxErrorsDelivered) == 1)
    }

    @Test func textFormsOfAddressesParse() {
        #expect(IPv6Address("2001:db8::2")?.description == "2001:db8::2")
        #expect(IPv6Address("::")?.isUnspecified == true)
        #expect(IPv6Address("::ffff:192.0.2.1")?.mappedIPv4 == IPv4Address(192, 0, 2, 1))
        #expect(IPv6Address("fe80::1:2:3:4:5:6:7") == nil && IPv6Address("1::2::3") == nil && IPv6Address("12345::") == nil)
        #expect(SocketAddress("[2001:db8::2]:7")?.ipv6 == IPv6Address("2001:db8::2") && SocketAddress("[::ffff:192.0.2.1]:7")?.ipv6 == nil)
        #expect(SocketAddress(IPv6Address("2001:db8::2")!, 7).description == "[2001:db8::2]:7")
    }
}
