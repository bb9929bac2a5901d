import Glibc
import NIOCore
import NIOPosix
import SocketService
import Sockets
import Testing
import TestSupport
import TapstackNIO
import Wire

/// Where the channel's socket lives: the stack in this process, or the same
/// stack through its socket service (TapstackClient), as another process sees it.
enum Backend: String, CaseIterable, CustomTestStringConvertible {
    case inProcess, service
    var testDescription: String { rawValue }
}

/// A stack over a memory link (the test plays the wire), optionally served.
final class NIOFixture {
    let link: MemoryLink
    let host: NetworkHost
    let service: SocketService?
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let backend: Backend
    let path = "/tmp/tapstack-nio-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"

    init(_ backend: Backend, ringCapacity: Int = 256) throws {
        self.backend = backend
        link = MemoryLink(capacity: ringCapacity)
        host = try NetworkHost(configuration: .standard, link: link)
        host.start()
        _ = link.nextTransmitted()  // the announcement
        if backend == .service {
            let service = try SocketService(host: host, path: path)
            service.start()
            self.service = service
        } else {
            service = nil
        }
        // Teach the stack the peer's MAC; swallow the ARP reply.
        link.inject(FrameBuilder.arp(.request))
        _ = link.nextTransmitted()
    }

    var bootstrap: TapstackDatagramBootstrap {
        backend == .inProcess ? TapstackDatagramBootstrap(group: group, host: host)
            : TapstackDatagramBootstrap(group: group, servicePath: path)
    }

    func stop() {
        service?.stop()
        host.stop()
        try? group.syncShutdownGracefully()
    }

    /// A datagram from the peer (192.0.2.1:35789) to `port` on the stack.
    func inject(_ payload: [UInt8], to port: UInt16) {
        link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: port, payload: payload))
    }

    /// The next UDP datagram the stack sent (ARP in between is skipped):
    /// ports, destination and payload.
    func nextDatagram() -> (sourcePort: UInt16, destination: String, destinationPort: UInt16, payload: [UInt8])? {
        var next = link.nextTransmitted(timeoutMilliseconds: 3000)
        while let frame = next, frame.count >= 14, frame[12] == 0x08, frame[13] == 0x06 { next = link.nextTransmitted(timeoutMilliseconds: 3000) }
        guard let frame = next, frame.count >= 42, frame[23] == 17 else { return nil }
        let headerLength = Int(frame[14] & 0x0F) * 4
        let udp = 14 + headerLength
        let length = Int(frame[udp + 4]) << 8 | Int(frame[udp + 5])
        return (UInt16(frame[udp]) << 8 | UInt16(frame[udp + 1]), frame[30..<34].map(String.init).joined(separator: "."),
                UInt16(frame[udp + 2]) << 8 | UInt16(frame[udp + 3]), Array(frame[(udp + 8)..<(udp + length)]))
    }
}

/// Records every pipeline event, in order, with the envelopes read.
final class Recorder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let lock = Locked<([String], [AddressedEnvelope<ByteBuffer>], [Error])>(([], [], []))

    var events: [String] { lock.withLock { $0.0 } }
    var reads: [AddressedEnvelope<ByteBuffer>] { lock.withLock { $0.1 } }
    var errors: [Error] { lock.withLock { $0.2 } }

    private func note(_ event: String) { lock.withLock { $0.0.append(event) } }
    func channelRegistered(context: ChannelHandlerContext) { note("registered"); context.fireChannelRegistered() }
    func channelActive(context: ChannelHandlerContext) { note("active"); context.fireChannelActive() }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        lock.withLock { $0.0.append("read"); $0.1.append(envelope) }
    }
    func channelReadComplete(context: ChannelHandlerContext) { note("readComplete") }
    func channelWritabilityChanged(context: ChannelHandlerContext) { note(context.channel.isWritable ? "writable" : "unwritable") }
    func channelInactive(context: ChannelHandlerContext) { note("inactive"); context.fireChannelInactive() }
    func channelUnregistered(context: ChannelHandlerContext) { note("unregistered"); context.fireChannelUnregistered() }
    func errorCaught(context: ChannelHandlerContext, error: Error) { lock.withLock { $0.0.append("error"); $0.2.append(error) } }
}

func bound(_ fixture: NIOFixture, port: Int, recorder: Recorder, autoRead: Bool = true) throws -> Channel {
    try fixture.bootstrap
        .channelOption(.autoRead, value: autoRead)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(recorder) }
        }
        .bind(host: "0.0.0.0", port: port).wait()
}

let peerAddress = try! SocketAddress(ipAddress: "192.0.2.1", port: 35789)

@Suite(.serialized) struct TapstackDatagramChannelTests {
    @Test(arguments: Backend.allCases) func pipelineEventsComeInOrderAndEnvelopesByteForByte(_ backend: Backend) throws {
        let fixture = try NIOFixture(backend)
        defer { fixture.stop() }
        let recorder = Recorder()
        let channel = try bound(fixture, port: 9007, recorder: recorder)
        #expect(channel.localAddress == (try SocketAddress(ipAddress: "0.0.0.0", port: 9007)))
        #expect(channel.isActive && channel.isWritable)

        fixture.inject(Array("hello, nio".utf8), to: 9007)
        #expect(eventually { recorder.reads.count == 1 })
        let envelope = try #require(recorder.reads.first)
        #expect(envelope.remoteAddress == peerAddress)
        #expect(Array(envelope.data.readableBytesView) == Array("hello, nio".utf8))

        // Back out: the bytes, from port 9007 to the peer's port.
        let reply = channel.allocator.buffer(bytes: [0, 1, 2, 255, 254])
        try channel.writeAndFlush(AddressedEnvelope(remoteAddress: peerAddress, data: reply)).wait()
        let sent = try #require(fixture.nextDatagram())
        #expect(sent.sourcePort == 9007 && sent.destination == "192.0.2.1" && sent.destinationPort == 35789)
        #expect(sent.payload == [0, 1, 2, 255, 254])

        try channel.close().wait()
        #expect(recorder.events == ["registered", "active", "read", "readComplete", "inactive", "unregistered"])
        #expect(fixture.host.withStack { $0.udpSockets.isEmpty } || backend == .service)
    }

    @Test(arguments: Backend.allCases) func aChannelBoundToTheIPv6AnyAddressServesBothFamilies(_ backend: Backend) throws {
        let fixture = try NIOFixture(backend)
        defer { fixture.stop() }
        // The peer solicits the stack (so the stack knows its MAC); the advertisement is the answer.
        fixture.link.inject(FrameBuilder.neighborSolicitation())
        let advertisement = try #require(fixture.link.nextTransmitted(timeoutMilliseconds: 3000))
        #expect(advertisement[12] == 0x86 && advertisement[13] == 0xDD && advertisement[54] == ICMPv6Type.neighborAdvertisement)
        let recorder = Recorder()
        let channel = try fixture.bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(recorder) }
            }
            .bind(host: "::", port: 9066).wait()
        defer { try? channel.close().wait() }
        #expect(channel.localAddress == (try SocketAddress(ipAddress: "::", port: 9066)))

        fixture.link.inject(FrameBuilder.udp6Frame(sourcePort: 35789, destinationPort: 9066, payload: Array("six".utf8)))
        fixture.inject(Array("four".utf8), to: 9066)
        #expect(eventually { recorder.reads.count == 2 })
        let peer6 = try SocketAddress(ipAddress: FrameBuilder.peerLinkLocal.description, port: 35789)
        #expect(recorder.reads.map(\.remoteAddress) == [peer6, peerAddress])
        #expect(recorder.reads.map { Array($0.data.readableBytesView) } == [Array("six".utf8), Array("four".utf8)])

        // Answered over IPv6 from the link-local address and port 9066, byte for byte.
        try channel.writeAndFlush(AddressedEnvelope(remoteAddress: peer6, data: channel.allocator.buffer(bytes: [6, 6]))).wait()
        let frame = try #require(fixture.link.nextTransmitted(timeoutMilliseconds: 3000))
        var expected = FrameBuilder.udp6Frame(sourcePort: 9066, destinationPort: 35789, payload: [6, 6],
                                              source: FrameBuilder.stackLinkLocal, destination: FrameBuilder.peerLinkLocal)
        expected.replaceSubrange(0..<12, with: FrameBuilder.peerMAC.octets + FrameBuilder.stackMAC.octets)
        #expect(frame == expected)
    }

    @Test(arguments: Backend.allCases) func aMulticastChannelJoinsReceivesTheGroupAndLeaves(_ backend: Backend) throws {
        let fixture = try NIOFixture(backend)
        defer { fixture.stop() }
        let recorder = Recorder()
        let channel = try bound(fixture, port: 5353, recorder: recorder)
        let multicast = try #require(channel as? MulticastChannel)
        let group = try SocketAddress(ipAddress: "239.1.2.3", port: 0)
        try multicast.joinGroup(group).wait()
        #expect(fixture.host.withStack { $0.joinedGroups } == [IPv4Address(239, 1, 2, 3)])
        // The membership report goes out (IGMP, protocol 2, to 224.0.0.22).
        let report = try #require(fixture.link.nextTransmitted(timeoutMilliseconds: 3000))
        #expect(report[23] == 2 && Array(report[30..<34]) == [224, 0, 0, 22])
        fixture.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 5353, payload: [1, 2, 3],
                                                  destination: IPv4Address(239, 1, 2, 3),
                                                  ethernetDestination: IPv4Address(239, 1, 2, 3).multicastMAC))
        #expect(eventually { recorder.reads.count == 1 })
        #expect(recorder.reads.first.map { Array($0.data.readableBytesView) } == [1, 2, 3])
        let multicastTTL = ChannelOptions.Types.SocketOption(level: .ip, name: .ip_multicast_ttl)
        try channel.setOption(multicastTTL, value: 4).wait()
        #expect(try channel.getOption(multicastTTL).wait() == 4)
        // Not a multicast address, or a device the stack does not have: refused.
        #expect(throws: IOError.self) { try multicast.joinGroup(try SocketAddress(ipAddress: "192.0.2.9", port: 0)).wait() }
        try multicast.leaveGroup(group).wait()
        #expect(fixture.host.withStack { $0.joinedGroups }.isEmpty)
        #expect(throws: IOError.self) { try multicast.leaveGroup(group).wait() }
        try channel.close().wait()
    }

    @Test func theServiceGoingAwayClosesTheChannelOnceInsteadOfReadingForever() throws {
        let fixture = try NIOFixture(.service)
        defer { fixture.stop() }
        let recorder = Recorder()
        let channel = try bound(fixture, port: 9011, recorder: recorder)
        fixture.service?.stop()
        // Bounded: before, the channel read the dead channel forever, one error per turn.
        #expect(eventually { recorder.events.last == "unregistered" })
        #expect(!channel.isActive)
        #expect(recorder.errors.count == 1)
        #expect(recorder.events.suffix(2) == ["inactive", "unregistered"])
    }

    @Test(arguments: Backend.allCases) func readsComeInBatchesOfMaxMessagesPerRead(_ backend: Backend) throws {
        let fixture = try NIOFixture(backend)
        defer { fixture.stop() }
        let recorder = Recorder()
        let channel = try fixture.bootstrap
            .channelOption(.maxMessagesPerRead, value: 2)
            .channelOption(.autoRead, value: false)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(recorder) } }
            .bind(host: "0.0.0.0", port: 9007).wait()
        for index in 0..<5 { fixture.inject([UInt8(index)], to: 9007) }
        #expect(eventually { fixture.host.counters[.udpRxDelivered] == 5 })
        // autoRead off: nothing is read until asked, then one batch per read().
        try channel.eventLoop.submit {}.wait()
        #expect(recorder.reads.isEmpty)
        channel.read()
        #expect(eventually { recorder.events.filter { $0 == "readComplete" }.count == 1 })
        #expect(recorder.reads.count == 2)
        try channel.setOption(.autoRead, value: true).wait()
        #expect(eventually { recorder.reads.count == 5 })
        #expect(recorder.reads.map { Array($0.data.readableBytesView) } == [[0], [1], [2], [3], [4]])
        try channel.close().wait()
    }

    @Test(arguments: Backend.allCases) func aFullLinkMakesTheChannelUnwritableUntilItDrainsWithNothingLost(_ backend: Backend) throws {
        let fixture = try NIOFixture(backend, ringCapacity: 16)
        defer { fixture.stop() }
        let recorder = Recorder()
        let channel = try bound(fixture, port: 9007, recorder: recorder)
        // In-process the ring itself pushes back; through the service, the
        // service holds the rest and stops reading, so the data channel's
        // kernel buffer must fill first.
        let count = backend == .inProcess ? 40 : 3000
        let promises = try channel.eventLoop.submit {
            (0..<count).map { index -> EventLoopFuture<Void> in
                let promise = channel.eventLoop.makePromise(of: Void.self)
                channel.write(AddressedEnvelope(remoteAddress: peerAddress, data: channel.allocator.buffer(bytes: [UInt8(index >> 8), UInt8(index & 0xFF)])), promise: promise)
                return promise.futureResult
            }
        }.wait()
        let completed = Locked(0)
        for promise in promises { promise.whenComplete { _ in completed.withLock { $0 += 1 } } }
        channel.flush()
        // The ring holds 16 frames and nobody takes them: the channel stops being writable.
        #expect(eventually { recorder.events.contains("unwritable") })
        #expect(!channel.isWritable)
        #expect(completed.withLock { $0 } < count)
        // The wire takes them all, in order; the channel is writable again and every write succeeded.
        var payloads: [[UInt8]] = []
        while payloads.count < count, let datagram = fixture.nextDatagram() { payloads.append(datagram.payload) }
        #expect(payloads == (0..<count).map { [UInt8($0 >> 8), UInt8($0 & 0xFF)] })
        for promise in promises { try promise.wait() }
        #expect(eventually { recorder.events.last == "writable" && channel.isWritable })
        try channel.close().wait()
    }

    @Test(arguments: Backend.allCases) func closeFreesThePortAndFailsWhatIsLeft(_ backend: Backend) throws {
        let fixture = try NIOFixture(backend)
        defer { fixture.stop() }
        let first = try bound(fixture, port: 7000, recorder: Recorder())
        #expect {
            try bound(fixture, port: 7000, recorder: Recorder())
        } throws: { ($0 as? IOError)?.errnoCode == EADDRINUSE }
        try first.close().wait()
        let second = try bound(fixture, port: 7000, recorder: Recorder())
        #expect(throws: ChannelError.self) { try first.writeAndFlush(AddressedEnvelope(remoteAddress: peerAddress, data: first.allocator.buffer(bytes: [1]))).wait() }
        try second.close().wait()
    }

    @Test(arguments: Backend.allCases) func aConnectedChannelGetsPortUnreachableAsConnectionRefused(_ backend: Backend) throws {
        let fixture = try NIOFixture(backend)
        defer { fixture.stop() }
        let recorder = Recorder()
        let channel = try fixture.bootstrap
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(recorder) } }
            .connect(host: "192.0.2.1", port: 35789).wait()
        #expect(channel.remoteAddress == peerAddress)
        #expect(channel.localAddress?.ipAddress == "192.0.2.2")
        try channel.writeAndFlush(AddressedEnvelope(remoteAddress: peerAddress, data: channel.allocator.buffer(bytes: [1, 2, 3]))).wait()
        let frame = try #require(fixture.link.nextTransmitted(timeoutMilliseconds: 3000))
        fixture.link.inject(FrameBuilder.ethernet(type: .ipv4, payload: FrameBuilder.ipv4(
            proto: .icmp, payload: FrameBuilder.icmp(type: 3, code: 3, payload: Array(frame[14..<42])))))
        #expect(eventually { !recorder.errors.isEmpty })
        #expect((recorder.errors.first as? IOError)?.errnoCode == ECONNREFUSED)
        #expect(channel.isActive)  // a datagram channel outlives the error, as a kernel socket does
        try channel.close().wait()
    }

    @Test(arguments: Backend.allCases) func optionsReachTheSocket(_ backend: Backend) throws {
        let fixture = try NIOFixture(backend)
        defer { fixture.stop() }
        let channel = try fixture.bootstrap
            .channelOption(.socketOption(.so_broadcast), value: 1)
            .channelOption(.socketOption(.so_rcvbuf), value: 4096)
            .bind(host: "0.0.0.0", port: 0).wait()
        #expect(try channel.getOption(.socketOption(.so_broadcast)).wait() == 1)
        #expect(try channel.getOption(.socketOption(.so_rcvbuf)).wait() == 4096)
        #expect(try channel.getOption(.socketOption(.so_reuseaddr)).wait() == 0)
        #expect(channel.localAddress!.port! >= 49152)
        #expect {
            try channel.setOption(.socketOption(.so_keepalive), value: 1).wait()
        } throws: { ($0 as? IOError)?.errnoCode == ENOPROTOOPT }
        try channel.close().wait()
    }

    @Test(arguments: Backend.allCases) func nioAsyncChannelServesAsyncCode(_ backend: Backend) async throws {
        let fixture = try NIOFixture(backend)
        defer { fixture.stop() }
        let channel = try await fixture.bootstrap.bind(host: "0.0.0.0", port: 9007) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
            }
        }
        fixture.inject(Array("async".utf8), to: 9007)
        try await channel.executeThenClose { inbound, outbound in
            for try await envelope in inbound {
                try await outbound.write(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: envelope.data))
                break
            }
        }
        let sent = try #require(fixture.nextDatagram())
        #expect(sent.payload == Array("async".utf8) && sent.destinationPort == 35789)
    }
}
