import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

/// IPv6 multicast sockets (IPV6_JOIN_GROUP): membership reported with MLDv2,
/// group datagrams to members only, sends with the multicast hop limit and loop.
@Suite struct MulticastIPv6Tests {
    static let group = IPv6Address("ff12::1234")!

    static func ready() -> Harness {
        let h = Harness { $0.reportsMulticastListening = true }
        h.stack.start(now: h.now)
        h.advance(seconds: 3)  // the solicited-node group's reports are over
        _ = h.sent()
        return h
    }

    @Test func aJoinIsReportedAndTheGroupsDatagramsReachOnlyItsMembers() throws {
        let h = Self.ready()
        let member = h.stack.openUDP(family: .ipv6)
        try h.stack.bind(member, to: SocketAddress(IPv6Address.unspecified, 9800))
        let other = h.stack.openUDP(family: .ipv6)
        other.reuseAddress = true
        member.reuseAddress = true
        try h.stack.bind(other, to: SocketAddress(IPv6Address.unspecified, 9801))
        try h.stack.join(Self.group, for: member, now: h.now)
        #expect(throws: SocketError.addressInUse) { try h.stack.join(Self.group, for: member, now: h.now) }
        #expect(throws: SocketError.invalidArgument) { try h.stack.join(IPv6Address("2001:db8::1")!, for: member, now: h.now) }
        // The join's report: CHANGE_TO_EXCLUDE for ff12::1234 to ff02::16.
        let report = try #require(MLDTests.mldFrames(h.sent()).first)
        #expect(report[70] == 4 && Array(report[74..<90]) == IPv6Tests.bytes(Self.group))
        #expect(Array(report[0..<6]) == [0x33, 0x33, 0, 0, 0, 0x16])
        // A datagram to the group, on the group's MAC: to the member on its port.
        var frame = FrameBuilder.udp6Frame(sourcePort: 5000, destinationPort: 9800, payload: [1, 2, 3], destination: Self.group)
        frame.replaceSubrange(0..<6, with: Self.group.multicastMAC.octets)
        h.receive(frame)
        #expect(try h.stack.receive(from: member).payload == [1, 2, 3])
        #expect(h.counter(.udpRxMulticastDelivered) == 1)
        // To a port where nobody joined: dropped, counted, no error sent.
        var elsewhere = FrameBuilder.udp6Frame(sourcePort: 5000, destinationPort: 9801, payload: [4], destination: Self.group)
        elsewhere.replaceSubrange(0..<6, with: Self.group.multicastMAC.octets)
        h.receive(elsewhere)
        #expect(h.counter(.udpDropMulticastNoMember) == 1 && h.sent().isEmpty)
        // Leaving is reported (CHANGE_TO_INCLUDE, no sources); the group's frames are then not for us.
        try h.stack.leave(Self.group, for: member, now: h.now)
        #expect(MLDTests.mldFrames(h.sent()).first?[70] == 3)
        h.receive(frame)
        #expect(h.counter(.ethernetDropNotForUs) == 1)
        #expect(throws: SocketError.addressNotAvailable) { try h.stack.leave(Self.group, for: member, now: h.now) }
    }

    @Test func aSendToAGroupUsesTheMulticastHopLimitAndLoopsBackToOurMembers() throws {
        let h = Self.ready()
        let member = h.stack.openUDP(family: .ipv6)
        try h.stack.bind(member, to: SocketAddress(IPv6Address.unspecified, 9800))
        try h.stack.join(Self.group, for: member, now: h.now)
        _ = h.sent()
        let sender = h.stack.openUDP(family: .ipv6)
        try [UInt8]([9, 9]).withUnsafeBytes { try h.stack.send($0, from: sender, to: SocketAddress(Self.group, 9800), now: h.now) }
        let out = try #require(h.sent().first)
        #expect(Array(out[0..<6]) == Self.group.multicastMAC.octets && out[21] == 1)  // hop limit 1 (IPV6_MULTICAST_HOPS default)
        #expect(Array(out[22..<38]) == IPv6Tests.bytes(h.stack.linkLocalAddress))
        #expect(try h.stack.receive(from: member).payload == [9, 9])  // IPV6_MULTICAST_LOOP
        sender.multicastLoop = false
        try [UInt8]([8]).withUnsafeBytes { try h.stack.send($0, from: sender, to: SocketAddress(Self.group, 9800), now: h.now) }
        #expect(throws: SocketError.wouldBlock) { try h.stack.receive(from: member) }
    }

    @Test func closingASocketLeavesItsGroups() throws {
        let h = Self.ready()
        let member = h.stack.openUDP(family: .ipv6)
        try h.stack.join(Self.group, for: member, now: h.now)
        #expect(h.stack.joinedIPv6Groups == [Self.group])
        h.stack.close(member)
        #expect(h.stack.joinedIPv6Groups.isEmpty)
    }
}
