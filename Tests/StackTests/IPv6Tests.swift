import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

/// IPv6 first steps: the link-local address, neighbour solicitation for it
/// (RFC 4861 7.2.4), echo (RFC 4443 4.1).
@Suite struct IPv6Tests {
    static let peerLinkLocal = IPv6Address.linkLocal(from: FrameBuilder.peerMAC)

    static func frame(to destination: IPv6Address, mac: MACAddress, icmp type: UInt8, body: [UInt8],
                      hopLimit: UInt8 = 255, source: IPv6Address = peerLinkLocal, corrupt: Bool = false) -> [UInt8] {
        var message = [type, 0, 0, 0] + body
        let checksum = message.withUnsafeBytes { ICMPv6Type.checksum($0, source: source, destination: destination) }
        message[2] = UInt8(checksum >> 8)
        message[3] = UInt8(checksum & 0xFF) ^ (corrupt ? 1 : 0)
        var packet = [UInt8](repeating: 0, count: IPv6Header.length) + message
        packet.withUnsafeMutableBytes {
            IPv6Header(payloadLength: message.count, nextHeader: ICMPv6Type.nextHeader, hopLimit: hopLimit,
                       source: source, destination: destination).emit(into: $0)
        }
        return FrameBuilder.ethernet(destination: mac, type: .ipv6, payload: packet)
    }

    /// A started stack whose addresses are in use (no DAD), its announcement drained.
    static func ready(_ configure: (inout StackConfiguration) -> Void = { _ in }) -> Harness {
        let h = Harness(configure)
        h.stack.start(now: h.now)
        _ = h.sent()
        return h
    }

    static func bytes(_ address: IPv6Address) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        out.withUnsafeMutableBytes { address.write(to: $0, at: 0) }
        return out
    }

    @Test func theLinkLocalAddressComesFromTheMAC() {
        let h = Harness()
        #expect(h.stack.linkLocalAddress.description == "fe80::ff:fe00:2")
        #expect(h.stack.linkLocalAddress.solicitedNode.description == "ff02::1:ff00:2")
        #expect(h.stack.linkLocalAddress.solicitedNode.multicastMAC == MACAddress("33:33:ff:00:00:02")!)
        #expect(IPv6Address.linkLocal(from: MACAddress("be:5e:63:13:bd:1b")!).description == "fe80::bc5e:63ff:fe13:bd1b")
    }

    @Test func aSolicitationForOurAddressGetsASolicitedAdvertisementByteForByte() throws {
        let h = Self.ready()
        let ours = h.stack.linkLocalAddress
        let option: [UInt8] = [1, 1] + FrameBuilder.peerMAC.octets
        h.receive(Self.frame(to: ours.solicitedNode, mac: ours.solicitedNode.multicastMAC, icmp: ICMPv6Type.neighborSolicitation,
                             body: [0, 0, 0, 0] + Self.bytes(ours) + option))
        let sent = h.sent()
        #expect(sent.count == 1)
        let answer = try #require(sent.first)
        // To the sender's MAC and address, hop limit 255, flags S and O, target, our MAC as option 2.
        var expected = FrameBuilder.peerMAC.octets + FrameBuilder.stackMAC.octets + [0x86, 0xDD]
        expected += [0x60, 0, 0, 0, 0, 32, 58, 255] + Self.bytes(ours) + Self.bytes(Self.peerLinkLocal)
        expected += [136, 0, answer[56], answer[57], 0x60, 0, 0, 0] + Self.bytes(ours) + [2, 1] + FrameBuilder.stackMAC.octets
        #expect(answer == expected)
        answer.withUnsafeBytes { bytes in
            #expect(ICMPv6Type.checksum(UnsafeRawBufferPointer(rebasing: bytes[54...]), source: ours, destination: Self.peerLinkLocal) == 0)
        }
        #expect(h.counter(.icmpv6TxNeighborAdvertisements) == 1)
    }

    @Test func aDuplicateAddressProbeIsAnsweredToAllNodesWithoutTheSolicitedFlag() throws {
        let h = Self.ready()
        let ours = h.stack.linkLocalAddress
        h.receive(Self.frame(to: ours.solicitedNode, mac: ours.solicitedNode.multicastMAC, icmp: ICMPv6Type.neighborSolicitation,
                             body: [0, 0, 0, 0] + Self.bytes(ours), source: .unspecified))
        let answer = try #require(h.sent().first)
        #expect(Array(answer[0..<6]) == [0x33, 0x33, 0, 0, 0, 1])
        #expect(Array(answer[38..<54]) == Self.bytes(.allNodes) && answer[58] == 0x20)
    }

    @Test func invalidSolicitationsAreDroppedAndCounted() {
        let h = Self.ready()
        let ours = h.stack.linkLocalAddress
        let mac = ours.solicitedNode.multicastMAC
        h.receive(Self.frame(to: ours.solicitedNode, mac: mac, icmp: ICMPv6Type.neighborSolicitation,
                             body: [0, 0, 0, 0] + Self.bytes(ours), hopLimit: 64))  // forwarded: not from the link
        h.receive(Self.frame(to: ours.solicitedNode, mac: mac, icmp: ICMPv6Type.neighborSolicitation,
                             body: [0, 0, 0, 0] + Self.bytes(ours) + [1, 0, 0, 0, 0, 0, 0, 0]))  // an option of length 0
        h.receive(Self.frame(to: ours.solicitedNode, mac: mac, icmp: ICMPv6Type.neighborSolicitation,
                             body: [0, 0, 0, 0] + Self.bytes(Self.peerLinkLocal)))  // someone else's address
        h.receive(Self.frame(to: ours, mac: FrameBuilder.stackMAC, icmp: ICMPv6Type.echoRequest, body: [0, 1, 0, 1], corrupt: true))
        #expect(h.counter(.icmpv6DropInvalidNeighborDiscovery) == 2)
        #expect(h.counter(.icmpv6DropNotOurTarget) == 1)
        #expect(h.counter(.icmpv6DropBadChecksum) == 1)
        #expect(h.sent().isEmpty)
    }

    @Test func anEchoRequestFromAnUnknownNeighbourIsAnsweredOnceItsMACIsResolved() throws {
        let h = Self.ready()
        let ours = h.stack.linkLocalAddress
        let body: [UInt8] = [0x12, 0x34, 0, 7] + Array("ping six".utf8)
        h.receive(Self.frame(to: ours, mac: FrameBuilder.stackMAC, icmp: ICMPv6Type.echoRequest, body: body, hopLimit: 64))
        // RFC 4861 7.2.2: the reply waits while a multicast solicitation asks for the sender's MAC.
        let solicitation = try #require(h.sent().first)
        #expect(Array(solicitation[0..<6]) == Self.peerLinkLocal.solicitedNode.multicastMAC.octets)
        #expect(solicitation[21] == 255 && solicitation[54] == ICMPv6Type.neighborSolicitation)
        #expect(Array(solicitation[62..<78]) == Self.bytes(Self.peerLinkLocal))
        #expect(Array(solicitation[78..<86]) == [1, 1] + FrameBuilder.stackMAC.octets)
        #expect(h.stack.neighborCache[Self.peerLinkLocal]?.state == .incomplete)
        // The solicited advertisement resolves it and the parked reply leaves.
        let advertisement: [UInt8] = [0x60, 0, 0, 0] + Self.bytes(Self.peerLinkLocal) + [2, 1] + FrameBuilder.peerMAC.octets
        h.receive(Self.frame(to: ours, mac: FrameBuilder.stackMAC, icmp: ICMPv6Type.neighborAdvertisement, body: advertisement))
        #expect(h.stack.neighborCache[Self.peerLinkLocal]?.state == .reachable)
        let answer = try #require(h.sent().first)
        #expect(Array(answer[0..<6]) == FrameBuilder.peerMAC.octets && answer[20] == 58)
        #expect(answer[54] == ICMPv6Type.echoReply && Array(answer[58...]) == body)
        #expect(h.counter(.icmpv6TxEchoReplies) == 1)
        // Now resolved: the next echo is answered at once.
        h.receive(Self.frame(to: ours, mac: FrameBuilder.stackMAC, icmp: ICMPv6Type.echoRequest, body: body, hopLimit: 64))
        #expect(h.sent().map { $0[54] } == [ICMPv6Type.echoReply])
        // Another destination: not for us.
        h.receive(Self.frame(to: Self.peerLinkLocal, mac: FrameBuilder.stackMAC, icmp: ICMPv6Type.echoRequest, body: body))
        #expect(h.counter(.ipv6DropNotForUs) == 1)
    }

    static let global = IPv6Address(high: 0x2001_0DB8_0000_0000, low: 2)

    @Test func addressesAreCheckedUniqueBeforeUse() throws {
        let h = Harness { $0.duplicateAddressDetectionTransmits = 1; $0.ipv6Addresses = [Self.global] }
        h.stack.start(now: h.now)
        let probes = h.sent().filter { $0[12] == 0x86 && $0[13] == 0xDD }
        // One probe per address: from ::, to its solicited-node group, hop limit 255, no options.
        #expect(probes.count == 2)
        #expect(probes.allSatisfy { Array($0[22..<38]) == [UInt8](repeating: 0, count: 16) && $0[21] == 255 && $0[54] == 135 && $0.count == 78 })
        #expect(h.stack.ipv6Addresses.isEmpty)
        // While tentative, an echo to it is not answered.
        h.receive(Self.frame(to: Self.global, mac: FrameBuilder.stackMAC, icmp: ICMPv6Type.echoRequest, body: [0, 1, 0, 1]))
        #expect(h.sent().isEmpty)
        h.advance(seconds: 1.1)
        #expect(h.stack.ipv6Addresses == [Self.global, h.stack.linkLocalAddress].sorted { ($0.high, $0.low) < ($1.high, $1.low) })
        h.receive(Self.frame(to: Self.global, mac: FrameBuilder.stackMAC, icmp: ICMPv6Type.echoRequest, body: [0, 1, 0, 1]))
        #expect(h.counter(.icmpv6RxEchoRequests) == 1 && h.counter(.ipv6DropNotForUs) == 1)  // the first came while tentative
    }

    @Test func anAddressSomeoneElseHoldsIsRefused() throws {
        let h = Harness { $0.duplicateAddressDetectionTransmits = 1; $0.ipv6Addresses = [Self.global] }
        var conflicts: [IPv6Address] = []
        h.stack.onAddressConflict = { conflicts.append($0) }
        h.stack.start(now: h.now)
        _ = h.sent()
        // The holder answers the probe: an advertisement for the tentative address.
        let advertisement: [UInt8] = [0x20, 0, 0, 0] + Self.bytes(Self.global) + [2, 1] + FrameBuilder.peerMAC.octets
        h.receive(Self.frame(to: .allNodes, mac: IPv6Address.allNodes.multicastMAC, icmp: ICMPv6Type.neighborAdvertisement,
                             body: advertisement))
        #expect(conflicts == [Self.global])
        #expect(h.counter(.ipv6DadConflicts) == 1)
        h.advance(seconds: 2)
        #expect(h.stack.ipv6Addresses == [h.stack.linkLocalAddress])
        #expect(h.stack.ipv6AddressStates[Self.global] == .duplicate)
        _ = h.sent()  // the second ARP announcement
        // Never answered for, afterwards.
        h.receive(Self.frame(to: Self.global.solicitedNode, mac: Self.global.solicitedNode.multicastMAC,
                             icmp: ICMPv6Type.neighborSolicitation, body: [0, 0, 0, 0] + Self.bytes(Self.global)))
        #expect(h.sent().isEmpty)
    }
}
