import CTapstackChannel
import FoundationEssentials
import Glibc
import SocketService
import Sockets
import Stack
import TapstackClient
import Testing
import TestSupport
import Wire

/// `tapstack ss` and `tapstack stats`: what the service answers, asked as
/// the command asks (TSP_QUERY, the answer in a passed memfd).
@Suite(.serialized) struct IntrospectionTests {
    func query(_ path: String, _ what: tsp_query) throws -> [UInt8] {
        var fd: Int32 = -1
        var length = 0
        #expect(tsc_query(path, Int32(what.rawValue), &fd, &length) == 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: length)
        #expect(bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, length) } == length)
        return bytes
    }

    @Test func socketsAreListedWithTheirOwnersQueuesAndDrops() throws {
        let served = try ServedHost()
        defer { served.stop() }
        let inProcess = Sockets.UDPSocket(host: served.host)
        try inProcess.bind(port: 7)
        let client = try TapstackClient.UDPSocket(servicePath: served.path)
        try client.bind(port: 9000)
        try client.connect(to: peer)
        served.learnPeer()
        // Two datagrams for the in-process socket, which nobody reads: queued there.
        for payload in [[UInt8](repeating: 1, count: 10), [UInt8](repeating: 2, count: 30)] {
            served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload))
        }
        #expect(eventually { inProcess.readiness.contains(.readable) && served.host.withStack { $0.udpSockets.first!.queuedDatagrams == 2 } })

        let records = try IntrospectionFormat.decoder().decode([SocketRecord].self, from: Data(try query(served.path, TSP_QUERY_SOCKETS)))
        try #require(records.count == 2)
        let (echo, remote) = (records[0], records[1])
        #expect(echo.localPort == 7 && echo.remoteAddress == nil)
        #expect(echo.queuedDatagrams == 2 && echo.queuedBytes == 40 && echo.receivedDatagrams == 2 && echo.droppedDatagrams == 0)
        #expect(echo.owner.kind == "in-process" && echo.owner.pid == getpid())
        #expect(remote.localPort == 9000 && remote.remoteAddress == "192.0.2.1" && remote.remotePort == 35789)
        #expect(remote.owner.kind == "client" && remote.owner.pid == getpid() && remote.owner.uid == getuid())

        let table = SocketTable.render(records)
        let lines = table.split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix("State "))
        #expect(lines[1].hasPrefix("UNCONN  2       40 "))
        #expect(lines[2].contains("192.0.2.1:35789") && lines[2].hasPrefix("ESTAB "))
    }

    @Test func ipv6SocketsAreListedAsSsShowsThem() throws {
        let served = try ServedHost()
        defer { served.stop() }
        let dual = Sockets.UDPSocket(host: served.host, family: .ipv6)
        try dual.bind(port: 7)
        let only = Sockets.UDPSocket(host: served.host, family: .ipv6)
        only.v6Only = true
        try only.bind(to: SocketAddress(IPv6Address.unspecified, 8))
        let client = try TapstackClient.UDPSocket(servicePath: served.path, family: .ipv6)
        try client.connect(to: SocketAddress(IPv6Address("fe80::1")!, 53))
        let records = try IntrospectionFormat.decoder().decode([SocketRecord].self, from: Data(try query(served.path, TSP_QUERY_SOCKETS)))
        try #require(records.count == 3)
        #expect(records.map(\.family) == ["ipv6", "ipv6", "ipv6"])
        #expect(records[0].localAddress == "::" && records[1].options == ["v6only"])
        #expect(records[2].remoteAddress == "fe80::1" && records[2].remotePort == 53 && records[2].localAddress == "::")
        let lines = SocketTable.render(records).split(separator: "\n")
        #expect(lines[1].contains(" *:7 ") && lines[2].contains(" [::]:8 "))
        #expect(lines[3].hasPrefix("ESTAB ") && lines[3].contains(" [fe80::1]:53 "))
    }

    @Test func aFullQueueCountsItsDropsOnTheSocket() throws {
        let served = try ServedHost()
        defer { served.stop() }
        let socket = Sockets.UDPSocket(host: served.host)
        try socket.bind(port: 7)
        socket.receiveBufferSize = 2048
        served.learnPeer()
        for _ in 0..<5 { served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [UInt8](repeating: 0, count: 1000))) }
        #expect(served.host.waitUntilIdle())
        #expect(eventually { served.host.withStack { $0.udpSockets.first!.receivedDatagrams + $0.udpSockets.first!.droppedDatagrams } == 5 })
        let records = try IntrospectionFormat.decoder().decode([SocketRecord].self, from: Data(try query(served.path, TSP_QUERY_SOCKETS)))
        #expect(records.first?.receivedDatagrams == 2 && records.first?.droppedDatagrams == 3 && records.first?.receiveBufferBytes == 2048)
        #expect(served.host.counters[.udpDropQueueFull] == 3)
    }

    @Test func countersAreOneJSONObjectWithTheServicesOwn() throws {
        let served = try ServedHost()
        defer { served.stop() }
        let counters = try JSONDecoder().decode([String: UInt64].self, from: Data(try query(served.path, TSP_QUERY_COUNTERS)))
        #expect(counters["udp.rx_datagrams"] == 0)
        #expect(counters["arp.tx_replies"] == 0)
        #expect(counters["ethernet.tx_frames"] == 1)  // the announcement
        #expect(counters["service.connections"] == 1)  // this query's
        #expect(counters.count == StackCounter.allCases.count + served.service.counters.snapshot.count)
    }

    @Test func anUnknownQueryIsRefused() throws {
        let served = try ServedHost()
        defer { served.stop() }
        var fd: Int32 = -1
        var length = 0
        #expect(tsc_query(served.path, 99, &fd, &length) == -1 && errno == EINVAL)
        #expect(served.service.counters.badRequests.load(ordering: .relaxed) == 1)
    }
}

@Suite struct PrometheusExpositionTests {
    @Test func namesFollowTheMetricNameRulesAndEndInTotal() {
        #expect(PrometheusExposition.metricName(for: "udp.rx_datagrams") == "tapstack_udp_rx_datagrams_total")
        #expect(PrometheusExposition.metricName(for: "a-b c.d") == "tapstack_a_b_c_d_total")
    }

    @Test func eachCounterHasHelpTypeAndOneLabelledSample() {
        let text = PrometheusExposition.render(["udp.rx_datagrams": 42, "arp.tx_replies": 0], labels: ["interface": "t\"a\\p\n0"])
        #expect(text == """
        # HELP tapstack_arp_tx_replies_total tapstack counter arp.tx_replies.
        # TYPE tapstack_arp_tx_replies_total counter
        tapstack_arp_tx_replies_total{interface="t\\"a\\\\p\\n0"} 0
        # HELP tapstack_udp_rx_datagrams_total tapstack counter udp.rx_datagrams.
        # TYPE tapstack_udp_rx_datagrams_total counter
        tapstack_udp_rx_datagrams_total{interface="t\\"a\\\\p\\n0"} 42

        """)
    }
}
