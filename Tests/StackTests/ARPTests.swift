import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

@Suite struct StackARPTests {
    @Test func requestForOurAddressIsAnsweredByteForByte() {
        let h = Harness()
        h.receive(Captured.arpRequest)
        #expect(h.sent() == [Captured.arpReply])
        #expect(h.counter(.arpTxReplies) == 1)
    }

    @Test func requestForOurAddressTeachesTheSender() {
        let h = Harness()
        h.receive(Captured.arpRequest)
        let entry = h.stack.arpCache[FrameBuilder.peerIP]
        #expect(entry?.mac == FrameBuilder.peerMAC)
        #expect(entry?.state == .reachable)
    }

    @Test func requestForAnotherAddressIsIgnoredAndNotLearned() {
        let h = Harness()
        h.receive(FrameBuilder.arp(.request, targetIP: IPv4Address(192, 0, 2, 99)))
        #expect(h.sent().isEmpty)
        #expect(h.stack.arpCache.count == 0)
    }

    @Test func knownSenderIsRefreshedEvenWhenNotForUs() {
        // RFC 826 merge: an existing entry is updated from any ARP packet.
        let h = Harness()
        h.learnPeer()
        let newMAC = MACAddress("be:5e:63:13:bd:99")!
        h.receive(FrameBuilder.arp(.request, senderMAC: newMAC, targetIP: IPv4Address(192, 0, 2, 99)))
        #expect(h.stack.arpCache[FrameBuilder.peerIP]?.mac == newMAC)
        #expect(h.sent().isEmpty)
    }

    @Test func gratuitousReplyFromStrangerDoesNotPoisonTheCache() {
        let h = Harness()
        h.receive(FrameBuilder.arp(.reply, senderIP: IPv4Address(192, 0, 2, 50), targetMAC: .broadcast,
                                   targetIP: IPv4Address(192, 0, 2, 50)))
        #expect(h.stack.arpCache.count == 0)
    }

    @Test(arguments: [MACAddress.broadcast, MACAddress("01:00:5e:00:00:01")!, MACAddress.zero])
    func nonUnicastSenderMACIsDropped(_ mac: MACAddress) {
        let h = Harness()
        h.receive(FrameBuilder.arp(.request, senderMAC: mac))
        #expect(h.sent().isEmpty)
        #expect(h.counter(.arpDropBadSender) == 1)
        #expect(h.stack.arpCache.count == 0)
    }

    @Test(arguments: [IPv4Address(192, 0, 2, 2), .broadcast, IPv4Address(224, 0, 0, 1), IPv4Address(127, 0, 0, 1),
                      IPv4Address(192, 0, 2, 255), IPv4Address(192, 0, 2, 0), IPv4Address(10, 9, 8, 7)])
    func badSenderAddressIsDropped(_ ip: IPv4Address) {
        let h = Harness()
        h.receive(FrameBuilder.arp(.request, senderIP: ip))
        #expect(h.sent().isEmpty)
        #expect(h.counter(.arpDropBadSender) == 1)
    }

    @Test func probeFromUnspecifiedSenderIsAnsweredButNotLearned() {
        let h = Harness()
        h.receive(FrameBuilder.arp(.request, senderIP: .any))
        #expect(h.sent().count == 1)
        #expect(h.stack.arpCache.count == 0)
    }

    @Test func wrongHardwareTypeIsIgnored() {
        let h = Harness()
        var frame = Captured.arpRequest
        frame[15] = 6  // hardware type 6 (IEEE 802)
        h.receive(frame)
        #expect(h.sent().isEmpty)
        #expect(h.counter(.arpDropUnsupported) == 1)
    }

    @Test func truncatedARPIsDroppedAndCounted() {
        let h = Harness()
        h.receive(Array(Captured.arpRequest[0..<30]))
        #expect(h.sent().isEmpty)
        #expect(h.counter(.arpDropTruncated) == 1)
    }

    @Test func startAnnouncesWithAGratuitousARP() throws {
        let h = Harness()
        h.stack.start(now: h.now)
        let frames = h.sent()
        #expect(frames.count == 1)
        let packet = try Array(frames[0][14..<42]).withUnsafeBytes { try ARPPacket(ARPPacketView($0)) }
        #expect(Array(frames[0][0..<6]) == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(packet.operation == .request)
        #expect(packet.senderIP == FrameBuilder.stackIP && packet.targetIP == FrameBuilder.stackIP)
        #expect(packet.senderMAC == FrameBuilder.stackMAC)
    }

    @Test func sendToUnknownNeighbourAsksAndParksThenSendsOnReply() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.send(Array("hi".utf8), from: endpoint, port: 6000)
        let asked = h.sent()
        #expect(asked.count == 1)
        #expect(asked.first == FrameBuilder.arp(.request, senderMAC: FrameBuilder.stackMAC, senderIP: FrameBuilder.stackIP,
                                                targetIP: FrameBuilder.peerIP) + [UInt8](repeating: 0, count: 18))
        h.receive(FrameBuilder.arp(.reply, targetMAC: FrameBuilder.stackMAC, destination: FrameBuilder.stackMAC))
        let flushed = h.sent()
        #expect(flushed.count == 1)
        #expect(Array(flushed[0][0..<6]) == FrameBuilder.peerMAC.octets)
        #expect(Array(flushed[0][42..<44]) == Array("hi".utf8))
    }

    @Test func unansweredResolutionRetriesThenReportsHostUnreachable() throws {
        let h = Harness()
        let (endpoint, log) = try h.boundEndpoint(port: 5000)
        try h.send([1], from: endpoint, port: 6000)
        #expect(h.sent().count == 1)
        h.advance(seconds: 1)
        #expect(h.sent().count == 1)
        h.advance(seconds: 1)
        #expect(h.sent().count == 1)
        #expect(log.events.isEmpty)
        h.advance(seconds: 1)
        #expect(h.sent().isEmpty)
        #expect(h.counter(.arpTxRequests) == 3)
        #expect(h.counter(.arpResolutionFailures) == 1)
        #expect(h.counter(.arpDropResolutionFailed) == 1)
        #expect(log.events == [.error])
        #expect(throws: SocketError.hostUnreachable) { try h.stack.receive(from: endpoint) }
    }

    @Test func parkedPacketsAreBoundedPerNeighbour() throws {
        let h = Harness { $0.arpPendingPacketsPerNeighbour = 2 }
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        for _ in 0..<5 { try h.send([1], from: endpoint, port: 6000) }
        #expect(h.counter(.arpDropPendingQueueFull) == 3)
        h.receive(FrameBuilder.arp(.reply, targetMAC: FrameBuilder.stackMAC, destination: FrameBuilder.stackMAC))
        #expect(h.sent().count == 3)  // the request, then the two parked packets
    }

    @Test func cacheIsBoundedAndEvictsTheOldest() {
        let h = Harness { $0.arpCacheCapacity = 4 }
        for i in 1...6 {
            h.receive(FrameBuilder.arp(.request, senderMAC: MACAddress(0x02, 1, 1, 1, 1, UInt8(i)),
                                       senderIP: IPv4Address(192, 0, 2, UInt8(10 + i))))
            h.advance(seconds: 0.1)
        }
        #expect(h.stack.arpCache.count == 4)
        #expect(h.counter(.arpCacheEvictions) == 2)
        #expect(h.stack.arpCache[IPv4Address(192, 0, 2, 11)] == nil)
        #expect(h.stack.arpCache[IPv4Address(192, 0, 2, 16)] != nil)
    }

    @Test func reachableEntryGoesStaleAfterTheReachableTime() {
        let h = Harness()
        h.learnPeer()
        h.advance(seconds: 29)
        #expect(h.stack.arpCache[FrameBuilder.peerIP]?.state == .reachable)
        h.advance(seconds: 2)
        #expect(h.stack.arpCache[FrameBuilder.peerIP]?.state == .stale)
    }
}

@Suite struct ARPLifecycleTests {
    @Test func startSendsTwoAnnouncementsTwoSecondsApart() {
        let h = Harness()
        h.stack.start(now: h.now)
        #expect(h.sent().count == 1)
        h.advance(seconds: 1.9)
        #expect(h.sent().isEmpty)
        h.advance(seconds: 0.2)
        #expect(h.sent().count == 1)
        h.advance(seconds: 5)
        #expect(h.sent().isEmpty)
        #expect(h.counter(.arpTxRequests) == 2)
    }

    @Test func failedResolutionIsRecordedAndTheNextSendAsksAgain() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.send([1], from: endpoint, port: 6000)
        for _ in 0..<3 { h.advance(seconds: 1) }
        #expect(h.stack.arpCache[FrameBuilder.peerIP]?.state == .failed)
        _ = h.sent()
        #expect(throws: SocketError.hostUnreachable) { try h.send([1], from: endpoint, port: 6000) }  // the pending error, once
        try h.send([1], from: endpoint, port: 6000)
        #expect(h.sent().count == 1)  // a new request
        #expect(h.stack.arpCache[FrameBuilder.peerIP]?.state == .incomplete)
    }

    @Test func failedEntryIsForgottenAfterItsHoldTime() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.send([1], from: endpoint, port: 6000)
        for _ in 0..<3 { h.advance(seconds: 1) }
        h.advance(seconds: 21)
        #expect(h.stack.arpCache[FrameBuilder.peerIP] == nil)
    }

    @Test func staleEntryIsProbedByUnicastThenDroppedIfSilent() throws {
        let h = Harness()
        h.learnPeer()
        h.advance(seconds: 31)
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        for _ in 0..<3 {
            try h.send([1], from: endpoint, port: 6000)
            let frames = h.sent()
            #expect(frames.count == 2)  // a unicast probe to the known MAC, and the datagram
            #expect(Array(frames[0][0..<6]) == FrameBuilder.peerMAC.octets && frames[0][13] == 0x06)
            h.advance(seconds: 1)
        }
        try h.send([1], from: endpoint, port: 6000)
        let frames = h.sent()
        #expect(frames.count == 1 && Array(frames[0][0..<6]) == MACAddress.broadcast.octets)  // resolving afresh
    }

    /// The stack remembers the last neighbour it sent to; a change of that
    /// neighbour's MAC must be used by the very next send.
    @Test func aNewMACIsUsedByTheNextSend() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.send([1], from: endpoint, port: 6000)
        #expect(h.sent().map { Array($0[0..<6]) } == [FrameBuilder.peerMAC.octets])
        let newMAC = MACAddress("be:5e:63:13:bd:99")!
        h.receive(FrameBuilder.arp(.request, senderMAC: newMAC))
        _ = h.sent()  // the ARP reply
        try h.send([2], from: endpoint, port: 6000)
        #expect(h.sent().map { Array($0[0..<6]) } == [newMAC.octets])
    }

    @Test func aReplyToAProbeMakesTheEntryReachableAgain() throws {
        let h = Harness()
        h.learnPeer()
        h.advance(seconds: 31)
        #expect(h.stack.arpCache[FrameBuilder.peerIP]?.state == .stale)
        h.receive(FrameBuilder.arp(.reply, targetMAC: FrameBuilder.stackMAC, destination: FrameBuilder.stackMAC))
        #expect(h.stack.arpCache[FrameBuilder.peerIP]?.state == .reachable)
    }

    @Test func parkedBytesAreBoundedAcrossNeighbours() throws {
        let h = Harness { $0.arpPendingMaximumBytes = 5000 }
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        for i in 0..<10 {
            try h.send([UInt8](repeating: 0, count: 1000), from: endpoint, to: IPv4Address(192, 0, 2, UInt8(100 + i)), port: 9)
        }
        #expect(h.stack.arpCache.pendingBytes <= 5000)
        #expect(h.counter(.arpDropPendingQueueFull) == 6)
    }

    @Test func thousandsOfSendersKeepTheCacheAtItsBound() {
        let h = Harness()
        for i in 0..<5000 {
            let ip = IPv4Address(rawValue: 0xC000_0200 | UInt32(1 + i % 250)) // on-link /24
            h.receive(FrameBuilder.arp(.request, senderMAC: MACAddress(rawValue: 0x0200_0000_0000 | UInt64(i + 1)),
                                       senderIP: IPv4Address(rawValue: ip.rawValue ^ UInt32(i / 250) << 8)))
        }
        #expect(h.stack.arpCache.count <= h.stack.configuration.arpCacheCapacity)
    }
}

@Suite struct LinkWithoutAddressesTests {
    /// On a TUN device there is no ARP: nothing announced, a first datagram
    /// goes out at once, and frames are taken whatever their made-up destination.
    @Test func noARPAndNoAnnouncementsWhenTheLinkHasNoAddresses() throws {
        let h = Harness { $0.resolvesLinkAddresses = false }
        h.stack.start(now: h.now)
        #expect(h.sent().isEmpty)
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        try h.send([1, 2], from: endpoint, port: 9)
        let frames = h.sent()
        #expect(frames.count == 1 && frames.first.map { $0[12] == 0x08 && $0[13] == 0x00 } == true)
        #expect(h.counter(.arpTxRequests) == 0)
        h.receive(FrameBuilder.udpFrame(destinationPort: 7, payload: [5], ethernetDestination: .zero, ethernetSource: .zero))
        #expect(endpoint.queuedDatagrams == 1)
    }
}
