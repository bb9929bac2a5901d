import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

/// IPv4 multicast and IGMP host behaviour (RFC 1112, RFC 2236, RFC 3376).
@Suite struct MulticastTests {
    static let group = IPv4Address(239, 1, 2, 3)

    /// A query as a router sends it: TTL 1, to 224.0.0.1 (general) or the group.
    static func query(group: IPv4Address = .any, maxResponse: UInt8, version3: Bool, sources: [IPv4Address] = [],
                      destination: IPv4Address? = nil) -> [UInt8] {
        var message: [UInt8] = [IGMPType.membershipQuery, maxResponse, 0, 0] + bytes(of: group)
        if version3 { message += [0x02, 125] + [UInt8(sources.count >> 8), UInt8(sources.count & 0xFF)] + sources.flatMap(bytes(of:)) }
        let checksum = message.withUnsafeBytes { InternetChecksum.compute($0) }
        message[2] = UInt8(checksum >> 8)
        message[3] = UInt8(checksum & 0xFF)
        let to = destination ?? (group.isUnspecified ? .allHosts : group)
        return FrameBuilder.ethernet(destination: to.multicastMAC, type: .ipv4,
                                     payload: FrameBuilder.ipv4(source: IPv4Address(192, 0, 2, 254), destination: to,
                                                                proto: .igmp, payload: message, ttl: 1))
    }

    static func bytes(of address: IPv4Address) -> [UInt8] {
        [UInt8(address.rawValue >> 24), UInt8(address.rawValue >> 16 & 0xFF), UInt8(address.rawValue >> 8 & 0xFF), UInt8(address.rawValue & 0xFF)]
    }

    /// The IGMP messages among `frames`, as (Ethernet destination, IP destination, message bytes).
    static func igmp(_ frames: [[UInt8]]) -> [(mac: MACAddress, destination: IPv4Address, message: [UInt8])] {
        frames.compactMap { frame in
            frame.withUnsafeBytes { bytes in
                guard let ethernet = try? EthernetFrameView(bytes), ethernet.etherType == .ipv4,
                      let packet = try? IPv4PacketView(ethernet.payload), packet.proto == .igmp else { return nil }
                return (ethernet.destination, packet.destination, Array(packet.payload))
            }
        }
    }

    func join(_ h: Harness, port: UInt16 = 5000, group: IPv4Address = MulticastTests.group) throws -> UDPEndpoint {
        let (endpoint, _) = try h.boundEndpoint(port: port)
        try h.stack.join(group, for: endpoint, now: h.now)
        return endpoint
    }

    @Test func aJoinIsReportedWithIGMPv3ByteForByteAndRepeatedOnce() throws {
        let h = Harness()
        _ = try join(h)
        let frames = h.sent()
        #expect(frames.count == 1)
        // What Linux sends for the same join (TTL 1, TOS 0xC0, DF, Router Alert;
        // one CHANGE_TO_EXCLUDE record with no sources), identification and checksums aside.
        let expected = hex("""
            01 00 5e 00 00 16 02 00 00 00 00 02 08 00
            46 c0 00 28 00 01 40 00 01 02 00 00 c0 00 02 02 e0 00 00 16 94 04 00 00
            22 00 00 00 00 00 00 01 04 00 00 00 ef 01 02 03
            """)
        var frame = frames[0]
        #expect(frame.count >= expected.count)
        frame = Array(frame[0..<expected.count])
        frame.withUnsafeBytes { bytes in
            let ip = UnsafeRawBufferPointer(rebasing: bytes[14..<38])
            #expect(InternetChecksum.compute(ip) == 0)
            #expect(InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: bytes[38...])) == 0)
        }
        frame[24] = 0; frame[25] = 0  // IP checksum
        frame[40] = 0; frame[41] = 0  // IGMP checksum
        #expect(frame == expected)
        #expect(h.counter(.igmpTxReports) == 1)
        // Robustness 2: once more within the unsolicited report interval (1 s).
        h.advance(seconds: 1)
        #expect(Self.igmp(h.sent()).map(\.message) == [Array(expected[38...]).withChecksum()])
        h.advance(seconds: 5)
        #expect(h.sent().isEmpty)
    }

    @Test func datagramsToAJoinedGroupReachOnlyTheSocketsThatJoinedIt() throws {
        let h = Harness()
        let member = try join(h)
        let (other, _) = try h.boundEndpoint(port: 5001)
        _ = h.sent()
        h.receive(FrameBuilder.udpFrame(destinationPort: 5000, payload: [1, 2, 3], destination: Self.group,
                                        ethernetDestination: Self.group.multicastMAC))
        let datagram = try h.stack.receive(from: member)
        #expect(datagram.payload == [1, 2, 3] && datagram.destination == Self.group)
        #expect(h.counter(.udpRxMulticastDelivered) == 1)
        // Same group, a port nobody joined on: dropped and counted, no ICMP error.
        h.receive(FrameBuilder.udpFrame(destinationPort: 5001, payload: [4], destination: Self.group,
                                        ethernetDestination: Self.group.multicastMAC))
        #expect(other.queuedDatagrams == 0)
        #expect(h.counter(.udpDropMulticastNoMember) == 1)
        #expect(h.sent().isEmpty)
        // A group nobody joined: its MAC is filtered at the Ethernet layer.
        let unjoined = IPv4Address(239, 9, 9, 9)
        h.receive(FrameBuilder.udpFrame(destinationPort: 5000, payload: [5], destination: unjoined,
                                        ethernetDestination: unjoined.multicastMAC))
        #expect(h.counter(.ethernetDropNotForUs) == 1)
        // After leaving, the group's frames are filtered too.
        try h.stack.leave(Self.group, for: member, now: h.now)
        h.receive(FrameBuilder.udpFrame(destinationPort: 5000, payload: [6], destination: Self.group,
                                        ethernetDestination: Self.group.multicastMAC))
        #expect(h.counter(.ethernetDropNotForUs) == 2)
        #expect(member.queuedDatagrams == 0)
    }

    @Test func aSourceSpecificMembershipTakesOnlyItsSources() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        let wanted = IPv4Address(192, 0, 2, 1)
        try h.stack.join(Self.group, for: endpoint, sources: [wanted], now: h.now)
        let report = Self.igmp(h.sent())
        #expect(report.count == 1 && report[0].message[8] == IGMPRecordType.changeToInclude)
        #expect(Array(report[0].message[16..<20]) == [192, 0, 2, 1])
        h.receive(FrameBuilder.udpFrame(destinationPort: 5000, payload: [1], source: IPv4Address(192, 0, 2, 7),
                                        destination: Self.group, ethernetDestination: Self.group.multicastMAC))
        #expect(endpoint.queuedDatagrams == 0)
        h.receive(FrameBuilder.udpFrame(destinationPort: 5000, payload: [2], source: wanted,
                                        destination: Self.group, ethernetDestination: Self.group.multicastMAC))
        #expect(endpoint.queuedDatagrams == 1)
        // An any-source join on top of a source-specific one: EADDRINUSE, as Linux.
        #expect(throws: SocketError.addressInUse) { try h.stack.join(Self.group, for: endpoint, now: h.now) }
    }

    @Test func aVersion2GeneralQueryIsAnsweredPerGroupWithinItsMaximumResponseTime() throws {
        let h = Harness()
        _ = try join(h)
        _ = try join(h, port: 5001, group: IPv4Address(239, 4, 5, 6))
        h.advance(seconds: 20)
        _ = h.sent()
        h.receive(Self.query(maxResponse: 100, version3: false))  // 10 s
        #expect(h.counter(.igmpRxQueries) == 1)
        #expect(h.stack.igmpVersion(now: h.now) == 2)
        #expect(h.sent().isEmpty)
        var answered: [IGMPReport] = []
        for _ in 0..<100 {
            h.advance(seconds: 0.1)
            for report in Self.igmp(h.sent()) {
                #expect(report.message[0] == IGMPType.version2Report)
                let group = report.message.withUnsafeBytes { IPv4Address(reading: $0, at: 4) }
                #expect(report.destination == group && report.mac == group.multicastMAC)
                answered.append(.version2(group: group))
            }
        }
        #expect(Set(answered.map { "\($0)" }) == ["version2(group: 239.1.2.3)", "version2(group: 239.4.5.6)"])
        #expect(answered.count == 2)
    }

    @Test func aVersion3GeneralQueryGetsOneReportWithEveryGroupsState() throws {
        let h = Harness()
        _ = try join(h)
        _ = try join(h, port: 5001, group: IPv4Address(239, 4, 5, 6))
        h.advance(seconds: 5)
        _ = h.sent()
        h.receive(Self.query(maxResponse: 20, version3: true))  // 2 s
        var reports: [[UInt8]] = []
        for _ in 0..<20 {
            h.advance(seconds: 0.1)
            reports += Self.igmp(h.sent()).map(\.message)
        }
        #expect(reports.count == 1)
        #expect(reports.first.map { Array($0[0..<8]) } == [0x22, 0, reports.first![2], reports.first![3], 0, 0, 0, 2])
        #expect(reports.first.map { Array($0[8...]) } == [2, 0, 0, 0, 239, 1, 2, 3, 2, 0, 0, 0, 239, 4, 5, 6])
        #expect(h.stack.igmpVersion(now: h.now) == 3)
    }

    @Test func aGroupSpecificQueryIsAnsweredForThatGroupOnly() throws {
        let h = Harness()
        _ = try join(h)
        _ = try join(h, port: 5001, group: IPv4Address(239, 4, 5, 6))
        h.advance(seconds: 5)
        _ = h.sent()
        h.receive(Self.query(group: Self.group, maxResponse: 10, version3: true))
        h.advance(seconds: 1)
        let reports = Self.igmp(h.sent())
        #expect(reports.count == 1)
        #expect(reports.first.map { Array($0.message[8...]) } == [2, 0, 0, 0, 239, 1, 2, 3])
        // A query for a group we do not hold gets nothing.
        h.receive(Self.query(group: IPv4Address(239, 7, 7, 7), maxResponse: 10, version3: true))
        h.advance(seconds: 1)
        #expect(h.sent().isEmpty)
    }

    @Test func theLastLeaveIsReportedInTheVersionInUse() throws {
        let h = Harness()
        let first = try join(h)
        let second = try join(h, port: 5001)
        h.advance(seconds: 5)
        _ = h.sent()
        try h.stack.leave(Self.group, for: first, now: h.now)
        // Another socket still holds the group: its state is unchanged (exclude {}), reported again.
        #expect(Self.igmp(h.sent()).allSatisfy { $0.message[8] == IGMPRecordType.changeToExclude })
        try h.stack.leave(Self.group, for: second, now: h.now)
        let leave = Self.igmp(h.sent())
        #expect(leave.count == 1 && leave[0].destination == .igmpv3Routers)
        #expect(leave.first.map { Array($0.message[8...]) } == [IGMPRecordType.changeToInclude, 0, 0, 0, 239, 1, 2, 3])
        #expect(h.stack.joinedGroups.isEmpty)

        // In version 2 mode a leave goes to 224.0.0.2.
        let third = try join(h, port: 5003)
        h.receive(Self.query(maxResponse: 100, version3: false))
        _ = h.sent()
        h.stack.close(third)
        let v2 = Self.igmp(h.sent())
        #expect(v2.count == 1 && v2[0].destination == .allRouters && v2[0].message[0] == IGMPType.leaveGroup)
        #expect(h.counter(.igmpTxLeaves) == 1)
    }

    @Test func allHostsIsNeverReported() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.stack.join(.allHosts, for: endpoint, now: h.now)
        h.receive(Self.query(maxResponse: 10, version3: true))
        h.advance(seconds: 2)
        #expect(Self.igmp(h.sent()).isEmpty)
    }

    @Test func malformedIGMPIsDroppedAndCounted() {
        let h = Harness()
        var bad = Self.query(maxResponse: 10, version3: true)
        bad[bad.count - 3] ^= 0xFF  // QQIC
        h.receive(bad)
        #expect(h.counter(.igmpDropBadChecksum) == 1)
        // 9 to 11 bytes: ignored (RFC 3376 7.1).
        var message: [UInt8] = [0x11, 10, 0, 0, 0, 0, 0, 0, 0, 0]
        let checksum = message.withUnsafeBytes { InternetChecksum.compute($0) }
        message[2] = UInt8(checksum >> 8); message[3] = UInt8(checksum & 0xFF)
        h.receive(FrameBuilder.ethernet(destination: IPv4Address.allHosts.multicastMAC, type: .ipv4,
                                        payload: FrameBuilder.ipv4(destination: .allHosts, proto: .igmp, payload: message, ttl: 1)))
        #expect(h.counter(.igmpDropBadLength) == 1)
        // A general query must go to 224.0.0.1.
        h.receive(Self.query(maxResponse: 10, version3: true, destination: IPv4Address(239, 1, 2, 3)))
        #expect(h.counter(.igmpDropBadQuery) + h.counter(.ethernetDropNotForUs) == 1)
        #expect(h.counter(.igmpRxQueries) == 0)
    }

    @Test func membershipsAreBoundedPerSocketAndInAll() throws {
        let h = Harness { $0.multicastMaximumGroups = 30 }
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        for i in 0..<20 { try h.stack.join(IPv4Address(239, 0, 0, UInt8(i + 1)), for: endpoint, now: h.now) }
        #expect(throws: SocketError.noBufferSpace) { try h.stack.join(IPv4Address(239, 0, 1, 1), for: endpoint, now: h.now) }
        let (second, _) = try h.boundEndpoint(port: 5001)
        for i in 0..<10 { try h.stack.join(IPv4Address(239, 0, 2, UInt8(i + 1)), for: second, now: h.now) }
        #expect(throws: SocketError.noBufferSpace) { try h.stack.join(IPv4Address(239, 0, 3, 1), for: second, now: h.now) }
        #expect(h.counter(.igmpDropGroupLimit) == 1)
        #expect(h.stack.joinedGroups.count == 30)
        #expect(throws: SocketError.invalidArgument) { try h.stack.join(IPv4Address(192, 0, 2, 9), for: second, now: h.now) }
        h.stack.close(endpoint)
        #expect(h.stack.joinedGroups.count == 10)
    }

    @Test func aFloodOfJoinsAndLeavesKeepsThePendingLeavesBounded() throws {
        let h = Harness { $0.multicastMaximumGroups = 8 }
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        for round in 0..<1000 {
            let group = IPv4Address(239, 9, UInt8(round >> 8), UInt8(round & 0xFF))
            try h.stack.join(group, for: endpoint, now: h.now)
            try h.stack.leave(group, for: endpoint, now: h.now)
        }
        _ = h.sent()
        #expect(h.stack.leavingGroups.count <= 8)
        #expect(h.counter(.igmpTxLeaveRepeatsDropped) == 1000 - 8)
        // The ones kept are repeated once, then forgotten.
        h.advance(seconds: 2)
        #expect(Self.igmp(h.sent()).count == 8)
        h.advance(seconds: 2)
        #expect(h.stack.leavingGroups.isEmpty)
    }

    @Test func multicastSendsGoToTheGroupsMACWithTTL1AndLoopToOurMembers() throws {
        let h = Harness()
        let member = try join(h)
        _ = h.sent()
        let (sender, _) = try h.boundEndpoint(port: 6000)
        try h.send([9, 9], from: sender, to: Self.group, port: 5000)
        let frames = h.sent()
        #expect(frames.count == 1)
        frames[0].withUnsafeBytes { bytes in
            let ethernet = try! EthernetFrameView(bytes)
            #expect(ethernet.destination == MACAddress("01:00:5e:01:02:03")!)
            let packet = try! IPv4PacketView(ethernet.payload)
            #expect(packet.ttl == 1 && packet.destination == Self.group && packet.source == FrameBuilder.stackIP)
        }
        #expect(try h.stack.receive(from: member).payload == [9, 9])
        #expect(h.counter(.udpTxMulticastLoopedBack) == 1)
        sender.multicastLoop = false
        sender.multicastTimeToLive = 4
        try h.send([8], from: sender, to: Self.group, port: 5000)
        #expect(h.sent().first.map { $0[22] } == 4)
        #expect(member.queuedDatagrams == 0)
    }
}

extension Array where Element == UInt8 {
    /// The IGMP message with its checksum filled in.
    fileprivate func withChecksum() -> [UInt8] {
        var message = self
        message[2] = 0; message[3] = 0
        let checksum = message.withUnsafeBytes { InternetChecksum.compute($0) }
        message[2] = UInt8(checksum >> 8)
        message[3] = UInt8(checksum & 0xFF)
        return message
    }
}
