import Testing
@testable import Link

@Suite struct DeviceStatisticsTests {
    static let sample = """
        Inter-|   Receive                                                |  Transmit
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
            lo:    3309      33    0    0    0     0          0         0     3309      33    0    0    0     0       0          0
          tap0:  123456     789    1    2    0     0          0         0   654321    4000    3  517    0     0       0          0
         tap01:       9       9    9    9    9     9          9         9        9       9    9    9    9     9       9          9
        """

    @Test func theKernelsCountersAreReadInItsWords() throws {
        let statistics = try #require(DeviceStatistics.parse(procNetDev: Self.sample, interface: "tap0"))
        #expect(statistics.rxPackets == 789)
        #expect(statistics.rxErrors == 1)
        #expect(statistics.rxDropped == 2)
        #expect(statistics.txPackets == 4000)
        #expect(statistics.txErrors == 3)
        #expect(statistics.txDropped == 517)
        #expect(DeviceStatistics.parse(procNetDev: Self.sample, interface: "tap") == nil)
        #expect(DeviceStatistics.parse(procNetDev: "tap0: 1 2 3\n", interface: "tap0") == nil)
    }

    @Test func countsAreSinceTheStackOpenedTheDevice() throws {
        var before = DeviceStatistics(), after = DeviceStatistics()
        before.txDropped = 100
        after.txDropped = 130
        after.rxPackets = 5  // a device made anew counts from zero
        before.rxPackets = 50
        let since = after.since(before)
        #expect(since.txDropped == 30)
        #expect(since.rxPackets == 5)
        #expect(since.snapshot.first { $0.0 == "device.tx_dropped" }?.1 == 30)
    }

    @Test func theLoopbackOfThisNamespaceIsFound() {
        #expect(DeviceStatistics.read(interface: "lo") != nil)
        #expect(DeviceStatistics.read(interface: "no-such-device") == nil)
    }
}
