import Testing
@testable import Stack

@Suite struct CountersTests {
    @Test func namesAreLayerDotSnakeCase() {
        #expect(StackCounter.ipv4DropBadChecksum.name == "ipv4.drop_bad_checksum")
        #expect(StackCounter.ethernetRxFrames.name == "ethernet.rx_frames")
        #expect(StackCounter.udpDropQueueFull.name == "udp.drop_queue_full")
    }

    @Test func namesAreUnique() {
        let names = StackCounter.allCases.map(\.name)
        #expect(Set(names).count == names.count)
    }

    @Test func changedListsOnlyWhatMoved() {
        var before = StackCounters()
        before.increment(.udpRxDatagrams)
        var after = before
        after.increment(.udpRxDelivered, by: 3)
        #expect(after.changed(since: before).map(\.counter) == [.udpRxDelivered])
    }
}
