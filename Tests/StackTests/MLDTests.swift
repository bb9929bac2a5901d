import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

/// MLDv2 reports for the solicited-node groups (RFC 3810, RFC 4861 7.2.1).
@Suite struct MLDTests {
    static let global = IPv6Address("2001:db8::2")!

    static func mldFrames(_ frames: [[UInt8]]) -> [[UInt8]] {
        frames.filter { $0.count > 62 && $0[12] == 0x86 && $0[13] == 0xDD && $0[20] == 0 && $0[62] == 143 }
    }

    @Test func joiningASolicitedNodeGroupIsReportedByteForByteBeforeTheProbeAndRepeated() throws {
        let h = Harness { $0.reportsMulticastListening = true; $0.duplicateAddressDetectionTransmits = 1; $0.ipv6Addresses = [Self.global] }
        h.stack.start(now: h.now)
        let sent = h.sent()
        let reports = Self.mldFrames(sent)
        // Both addresses share ff02::1:ff00:2: one join, reported once now.
        #expect(reports.count == 1)
        let report = try #require(reports.first)
        let group = IPv6Address("ff02::1:ff00:2")!
        var expected = [0x33, 0x33, 0, 0, 0, 0x16] + FrameBuilder.stackMAC.octets + [0x86, 0xDD]
        expected += [0x60, 0, 0, 0, 0, 36, 0, 1] + IPv6Tests.bytes(.unspecified) + IPv6Tests.bytes(IPv6Address("ff02::16")!)
        expected += [58, 0, 5, 2, 0, 0, 1, 0]                       // hop-by-hop: Router Alert (MLD), PadN
        expected += [143, 0, report[64], report[65], 0, 0, 0, 1]    // report, one record
        expected += [4, 0, 0, 0] + IPv6Tests.bytes(group)             // CHANGE_TO_EXCLUDE, no sources
        #expect(report == expected)
        let sum = report[62...].withUnsafeBytes { ICMPv6Type.checksum($0, source: .unspecified, destination: IPv6Address("ff02::16")!) }
        #expect(sum == 0)
        // The report goes before the probe (RFC 4862 5.4.2).
        let firstIPv6 = try #require(sent.firstIndex { $0[12] == 0x86 })
        #expect(sent[firstIPv6] == report)
        // Repeated once more (robustness 2) within the unsolicited report interval.
        h.advance(seconds: 1.1)
        #expect(Self.mldFrames(h.sent()).count == 1)
        h.advance(seconds: 5)
        #expect(Self.mldFrames(h.sent()).isEmpty)
        #expect(h.counter(.icmpv6TxMldReports) == 2)
    }

    @Test func aGeneralQueryIsAnsweredWithEveryGroupWithinItsDelay() throws {
        let h = Harness { $0.reportsMulticastListening = true; $0.ipv6Addresses = [IPv6Address("2001:db8::5")!] }
        h.stack.start(now: h.now)
        h.advance(seconds: 3)
        _ = h.sent()
        // General query from a link-local router: hop limit 1, Router Alert, max response 1000 ms.
        var query: [UInt8] = [130, 0, 0, 0, 0x03, 0xE8, 0, 0] + IPv6Tests.bytes(.unspecified) + [0, 0, 0, 0]
        let router = IPv6Address("fe80::1")!
        let sum = query.withUnsafeBytes { ICMPv6Type.checksum($0, source: router, destination: .allNodes) }
        query[2] = UInt8(sum >> 8); query[3] = UInt8(sum & 0xFF)
        func frame(hopLimit: UInt8) -> [UInt8] {
            var packet = [UInt8](repeating: 0, count: 40) + [58, 0, 5, 2, 0, 0, 1, 0] + query
            packet.withUnsafeMutableBytes {
                IPv6Header(payloadLength: 8 + query.count, nextHeader: 0, hopLimit: hopLimit, source: router, destination: .allNodes).emit(into: $0)
            }
            return FrameBuilder.ethernet(destination: IPv6Address.allNodes.multicastMAC, type: .ipv6, payload: packet)
        }
        h.receive(frame(hopLimit: 64))  // not from the link: ignored
        #expect(h.counter(.icmpv6DropInvalidMld) == 1)
        h.receive(frame(hopLimit: 1))
        #expect(Self.mldFrames(h.sent()).isEmpty)  // not at once: at a random delay
        h.advance(seconds: 1.01)
        let answer = try #require(Self.mldFrames(h.sent()).first)
        // From the link-local address now; two groups (fe80::ff:fe00:2's and 2001:db8::5's), MODE_IS_EXCLUDE.
        #expect(Array(answer[22..<38]) == IPv6Tests.bytes(h.stack.linkLocalAddress))
        #expect(Array(answer[68..<70]) == [0, 2] && answer[70] == 2 && answer[90] == 2)
        #expect(Set([Array(answer[74..<90]), Array(answer[94..<110])])
                == Set([IPv6Tests.bytes(IPv6Address("ff02::1:ff00:2")!), IPv6Tests.bytes(IPv6Address("ff02::1:ff00:5")!)]))
    }

    @Test func aStackMadeInCodeStaysQuietUnlessItAsks() {
        let h = Harness { $0.ipv6Addresses = [Self.global] }
        h.stack.start(now: h.now)
        h.advance(seconds: 3)
        #expect(Self.mldFrames(h.sent()).isEmpty)
    }
}
