import SocketAPI
import Testing
import TestSupport
@testable import Stack
@testable import Wire

@Suite struct ReassemblyTests {
    let payload = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

    /// A 3000-byte UDP datagram to port 7, as an IPv4 packet.
    var bigDatagram: [UInt8] {
        FrameBuilder.ipv4(proto: .udp, payload: FrameBuilder.udp(sourcePort: 40000, destinationPort: 7, payload: payload),
                          identification: 0x4242)
    }

    @Test(arguments: [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    func fragmentsReassembleInAnyOrder(_ order: [Int]) throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        let fragments = FrameBuilder.fragments(of: bigDatagram, size: 1480)
        try #require(fragments.count == 3)
        for index in order { h.receive(fragments[index]) }
        #expect(try h.stack.receive(from: endpoint).payload == payload)
        #expect(h.counter(.ipv4Reassembled) == 1)
        #expect(h.stack.reassembly.count == 0 && h.stack.reassembly.bufferedBytes == 0)
    }

    @Test func duplicateFragmentsAreTolerated() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        let fragments = FrameBuilder.fragments(of: bigDatagram, size: 1480)
        for frame in [fragments[0], fragments[1], fragments[1], fragments[0], fragments[2]] { h.receive(frame) }
        #expect(try h.stack.receive(from: endpoint).payload == payload)
        #expect(h.counter(.ipv4DropFragmentDuplicate) == 2)
    }

    @Test func overlappingFragmentsDiscardTheDatagram() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        let header = try bigDatagram.withUnsafeBytes { try IPv4Header(IPv4PacketView($0)) }
        let body = Array(bigDatagram[20...])
        h.receive(FrameBuilder.fragment(of: header, payload: Array(body[0..<1480]), offset: 0, more: true))
        // Overlaps the first by 8 bytes with different data.
        h.receive(FrameBuilder.fragment(of: header, payload: [UInt8](repeating: 0xAA, count: 1480), offset: 1472, more: true))
        h.receive(FrameBuilder.fragment(of: header, payload: Array(body[1480...]), offset: 1480, more: false))
        #expect(h.counter(.ipv4DropReassemblyOverlap) == 1)
        #expect(throws: SocketError.wouldBlock) { try h.stack.receive(from: endpoint) }
    }

    @Test func timeoutSendsTimeExceededWhenTheFirstFragmentArrived() throws {
        let h = Harness()
        h.learnPeer()
        let fragments = FrameBuilder.fragments(of: bigDatagram, size: 1480)
        h.receive(fragments[0])
        h.advance(seconds: 29)
        #expect(h.sent().isEmpty)
        h.advance(seconds: 1.5)
        // (The peer's ARP entry went stale meanwhile, so a unicast ARP probe may go out too.)
        let sent = h.sent().filter { $0[12] == 0x08 && $0[13] == 0x00 }
        try #require(sent.count == 1)
        try sent[0].withUnsafeBytes { raw in
            let ip = try IPv4PacketView(EthernetFrameView(raw).payload)
            #expect(ip.destination == FrameBuilder.peerIP)
            let icmp = try ICMPv4MessageView(ip.payload)
            #expect(icmp.type == ICMPv4Type.timeExceeded && icmp.code == 1 && icmp.checksumIsValid)
            // The first fragment's header and first 8 bytes of its payload (RFC 792).
            #expect(Array(icmp.payload) == Array(fragments[0][14..<42]))
        }
        #expect(h.counter(.ipv4DropReassemblyTimeout) == 1)
        #expect(h.counter(.icmpTxTimeExceeded) == 1)
        #expect(h.stack.reassembly.count == 0)
    }

    @Test func timeoutWithoutTheFirstFragmentIsSilent() {
        let h = Harness()
        h.learnPeer()
        h.receive(FrameBuilder.fragments(of: bigDatagram, size: 1480)[1])
        h.advance(seconds: 31)
        #expect(h.sent().isEmpty)
        #expect(h.counter(.ipv4DropReassemblyTimeout) == 1)
    }

    @Test func reassemblyBeyond65535BytesIsDropped() throws {
        let h = Harness()
        let header = try bigDatagram.withUnsafeBytes { try IPv4Header(IPv4PacketView($0)) }
        h.receive(FrameBuilder.fragment(of: header, payload: [UInt8](repeating: 1, count: 16), offset: 65520, more: false))
        #expect(h.counter(.ipv4DropReassemblyOversize) == 1)
        #expect(h.stack.reassembly.count == 0)
    }

    @Test func nonFinalFragmentMustBeAMultipleOfEight() throws {
        let h = Harness()
        let header = try bigDatagram.withUnsafeBytes { try IPv4Header(IPv4PacketView($0)) }
        h.receive(FrameBuilder.fragment(of: header, payload: [UInt8](repeating: 1, count: 100), offset: 0, more: true))
        #expect(h.counter(.ipv4DropFragmentBadLength) == 1)
    }

    @Test func fragmentBeyondTheKnownEndIsInconsistent() throws {
        let h = Harness()
        let header = try bigDatagram.withUnsafeBytes { try IPv4Header(IPv4PacketView($0)) }
        h.receive(FrameBuilder.fragment(of: header, payload: [UInt8](repeating: 1, count: 16), offset: 64, more: false))
        h.receive(FrameBuilder.fragment(of: header, payload: [UInt8](repeating: 1, count: 16), offset: 80, more: true))
        #expect(h.counter(.ipv4DropFragmentInconsistent) == 1)
    }

    @Test func concurrentReassembliesAreBoundedAndTheOldestGoes() {
        let h = Harness { $0.reassemblyMaximumDatagrams = 4 }
        for id in 0..<10 {
            let packet = FrameBuilder.ipv4(proto: .udp, payload: [UInt8](repeating: 0, count: 100), identification: UInt16(id))
            h.receive(FrameBuilder.fragments(of: packet, size: 48)[0])
            h.advance(seconds: 0.01)
        }
        #expect(h.stack.reassembly.count == 4)
        #expect(h.counter(.ipv4DropReassemblyEvicted) == 6)
    }

    @Test func bufferedBytesAreBounded() {
        let h = Harness { $0.reassemblyMaximumBytes = 10_000 }
        for id in 0..<20 {
            let packet = FrameBuilder.ipv4(proto: .udp, payload: [UInt8](repeating: 0, count: 3000), identification: UInt16(id))
            h.receive(FrameBuilder.fragments(of: packet, size: 1480)[1])  // middle fragment: buffer reaches 2960
        }
        #expect(h.stack.reassembly.bufferedBytes <= 10_000)
        #expect(h.counter(.ipv4DropReassemblyEvicted) > 0)
    }

    @Test func aLegitimateDatagramGetsThroughDuringAFloodOfIncompleteOnes() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 7)
        for id in 0..<10_000 {
            let packet = FrameBuilder.ipv4(source: IPv4Address(192, 0, 2, UInt8(10 + id % 200)), proto: .udp,
                                           payload: [UInt8](repeating: 0, count: 64), identification: UInt16(truncatingIfNeeded: id))
            h.receive(FrameBuilder.fragments(of: packet, size: 32)[0])
        }
        #expect(h.stack.reassembly.count <= h.stack.configuration.reassemblyMaximumDatagrams)
        for frame in FrameBuilder.fragments(of: bigDatagram, size: 1480) { h.receive(frame) }
        #expect(try h.stack.receive(from: endpoint).payload == payload)
    }
}

@Suite struct FragmentationTests {
    @Test func largeDatagramIsSentAsMTUSizedFragments() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        let payload = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        try h.send(payload, from: endpoint, port: 6000)
        let frames = h.sent()
        #expect(frames.count == 3)
        #expect(frames.allSatisfy { $0.count <= 1514 })
        let offsets = try frames.map { frame in
            try frame.withUnsafeBytes { try IPv4PacketView(EthernetFrameView($0).payload).fragmentOffset }
        }
        #expect(offsets == [0, 1480, 2960])
        let (header, reassembled) = try FrameBuilder.reassemble(frames)
        #expect(header.proto == .udp && !header.dontFragment)
        try reassembled.withUnsafeBytes { raw in
            let udp = try UDPDatagramView(raw)
            #expect(udp.checksumIsValid(source: FrameBuilder.stackIP, destination: FrameBuilder.peerIP))
            #expect(Array(udp.payload) == payload)
        }
        #expect(h.counter(.ipv4TxFragments) == 3 && h.counter(.ipv4TxFragmented) == 1)
    }

    @Test func allFragmentsShareOneIdentification() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.send([UInt8](repeating: 1, count: 4000), from: endpoint, port: 6000)
        try h.send([1], from: endpoint, port: 6000)
        let ids = try h.sent().map { frame in
            try frame.withUnsafeBytes { try IPv4PacketView(EthernetFrameView($0).payload).identification }
        }
        #expect(ids.count == 4)
        #expect(Set(ids[0..<3]).count == 1 && ids[3] != ids[0])
    }

    @Test func dontFragmentRefusesWhatExceedsTheMTU() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        endpoint.dontFragment = true
        #expect(throws: SocketError.messageTooLong) { try h.send([UInt8](repeating: 0, count: 1473), from: endpoint, port: 6000) }
        try h.send([UInt8](repeating: 0, count: 1472), from: endpoint, port: 6000)
        let frames = h.sent()
        #expect(frames.count == 1 && frames[0][20] & 0x40 != 0)
    }

    @Test func datagramsOverTheIPv4LimitAreRefused() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        #expect(throws: SocketError.messageTooLong) { try h.send([UInt8](repeating: 0, count: 65508), from: endpoint, port: 6000) }
    }

    @Test func aFragmentTrainIsAllOrNothing() throws {
        let h = Harness()
        h.learnPeer()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        h.sink.limit = 2
        #expect(throws: SocketError.wouldBlock) { try h.send([UInt8](repeating: 0, count: 4000), from: endpoint, port: 6000) }
        #expect(h.sent().isEmpty)
    }

    @Test func parkedLargeDatagramIsFragmentedWhenResolved() throws {
        let h = Harness()
        let (endpoint, _) = try h.boundEndpoint(port: 5000)
        try h.send([UInt8](repeating: 9, count: 2000), from: endpoint, port: 6000)
        #expect(h.sent().count == 1)  // the ARP request
        h.receive(FrameBuilder.arp(.reply, targetMAC: FrameBuilder.stackMAC, destination: FrameBuilder.stackMAC))
        let (_, payload) = try FrameBuilder.reassemble(h.sent())
        #expect(payload.count == 2008)
    }

    @Test(arguments: [1473, 4000, 65507 - 8])
    func fragmentedEchoRequestGetsAFragmentedReplyWithTheSameData(_ size: Int) throws {
        let h = Harness()
        h.learnPeer()
        let data = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let request = FrameBuilder.ipv4(proto: .icmp, payload: FrameBuilder.icmp(type: ICMPv4Type.echoRequest,
                                                                                 restOfHeader: 0x0001_0002, payload: data))
        for frame in FrameBuilder.fragments(of: request, size: 1480) { h.receive(frame) }
        let (header, reply) = try FrameBuilder.reassemble(h.sent())
        #expect(header.proto == .icmp && header.destination == FrameBuilder.peerIP)
        try reply.withUnsafeBytes { raw in
            let icmp = try ICMPv4MessageView(raw)
            #expect(icmp.type == ICMPv4Type.echoReply && icmp.checksumIsValid)
            #expect(icmp.restOfHeader == 0x0001_0002)
            #expect(Array(icmp.payload) == data)
        }
    }
}
