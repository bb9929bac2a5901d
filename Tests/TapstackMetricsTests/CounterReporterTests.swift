import CoreMetrics
import MetricsTestKit
import Sockets
import TapstackMetrics
import Testing
import TestSupport

@Suite struct CounterReporterTests {
    @Test func theStacksCountersReachTheMetricsBackendAsTheyGrow() throws {
        let metrics = TestMetrics()
        let link = MemoryLink()
        let host = try NetworkHost(configuration: .standard, link: link)
        host.start()
        defer { host.stop() }
        _ = link.nextTransmitted()  // the announcement
        let reporter = CounterReporter(host: host, dimensions: [("interface", "mem0")], factory: metrics)
        reporter.report()
        let requests = try metrics.expectCounter("tapstack_arp_rx_requests", [("interface", "mem0")])
        #expect(requests.values.reduce(0, +) == 0)

        link.inject(FrameBuilder.arp(.request))
        #expect(link.nextTransmitted() != nil)  // the reply: the request was counted
        link.inject(FrameBuilder.arp(.request))
        #expect(link.nextTransmitted() != nil)
        reporter.report()
        reporter.report()  // nothing new: nothing added twice
        #expect(requests.values.reduce(0, +) == 2)
        #expect(try metrics.expectCounter("tapstack_ethernet_tx_frames", [("interface", "mem0")]).values.reduce(0, +) == 3)
    }

    @Test func aReportingThreadReportsUntilStopped() throws {
        let metrics = TestMetrics()
        let values = Locked<UInt64>(5)
        let reporter = CounterReporter(factory: metrics) { [("udp.rx_datagrams", values.withLock { $0 })] }
        reporter.start(every: .milliseconds(10))
        #expect(eventually { (try? metrics.expectCounter("tapstack_udp_rx_datagrams"))?.values.reduce(0, +) == 5 })
        values.withLock { $0 = 12 }
        reporter.stop()  // reports once more on the way out
        #expect(try metrics.expectCounter("tapstack_udp_rx_datagrams").values.reduce(0, +) == 12)
    }
}
