import CTapstackChannel
import Glibc
import SocketAPI
import SocketService
@testable import TapstackClient
import Testing
import TestSupport
import Wire

/// `TapstackClient.UDPSocket`'s batch calls, `receive(upTo:into:received:)`
/// and `send(batch:failed:)`: what the in-process socket's batch calls do,
/// through the service's shared rings.
@Suite(.serialized) struct ClientBatchTests {
    /// Receives into `slots` slots of `slotSize` bytes; returns each datagram's full length, source and the bytes kept.
    static func receiveBatch(_ socket: TapstackClient.UDPSocket, slots: Int = 8, slotSize: Int = 128) throws(SocketError)
        -> [(length: Int, source: SocketAddress, bytes: [UInt8])] {
        let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: slots * slotSize, alignment: 8)
        defer { buffers.deallocate() }
        func slot(_ index: Int) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(rebasing: buffers[(index * slotSize)..<((index + 1) * slotSize)])
        }
        var got: [(length: Int, source: SocketAddress, bytes: [UInt8])] = []
        let count = try socket.receive(upTo: slots, into: slot) { index, length, source in
            got.append((length, source, Array(slot(index)[0..<min(length, slotSize)])))
        }
        #expect(count == got.count)
        return got
    }

    /// Copies of `payloads` that stay put until `body` returns (a batch's `next` hands out pointers).
    static func withCopies<R>(of payloads: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) throws -> R) rethrows -> R {
        let copies = payloads.map { payload in
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(payload.count, 1), alignment: 8)
            payload.withUnsafeBytes { copy.copyMemory(from: $0) }
            return UnsafeRawBufferPointer(rebasing: copy[0..<payload.count])
        }
        defer { copies.forEach { UnsafeMutableRawPointer(mutating: $0.baseAddress!).deallocate() } }
        return try body(copies)
    }

    @Test func aBatchTakesEveryWaitingDatagramInOrderAndCutsWhatDoesNotFit() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        #expect(try Self.receiveBatch(socket).isEmpty)  // nothing waits; asks for the region
        let payloads = [10, 100, 200, 128, 1].enumerated().map { index, size in
            [UInt8](repeating: UInt8(index + 1), count: size)
        }
        for payload in payloads {
            served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload))
        }
        let counters = served.service.counters
        #expect(eventually { counters.datagramsReceived.load(ordering: .relaxed) == UInt64(payloads.count) })
        // One call takes all five, from the ring.
        let got = try Self.receiveBatch(socket)
        #expect(got.map(\.length) == payloads.map(\.count))  // full lengths, the 200-byte one too
        #expect(got.map(\.bytes) == payloads.map { Array($0.prefix(128)) })
        #expect(got.allSatisfy { $0.source == peer })
        #expect(counters.regionFallbacks.load(ordering: .relaxed) == 0)
        #expect(try Self.receiveBatch(socket).isEmpty)
        // No doorbell outlived its datagrams.
        var descriptor = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
        #expect(poll(&descriptor, 1, 0) == 0)
    }

    /// An error is reported once, by the call that finds it first: a batch
    /// that already holds datagrams leaves it for the next call.
    @Test func anErrorBehindTheBatchWaitsForTheNextCall() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        #expect(try Self.receiveBatch(socket).isEmpty)  // asks for the region
        let counters = served.service.counters
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [1]))
        #expect(eventually { counters.datagramsReceived.load(ordering: .relaxed) == 1 })
        // A bare message on an unconnected socket has nowhere to go: the
        // service refuses it, and the refusal goes on the channel...
        _ = [UInt8](repeating: 0, count: 3).withUnsafeBytes { send(socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
        #expect(eventually { counters.errorsDelivered.load(ordering: .relaxed) == 1 })
        // ...before the next datagram is passed on (one client's deliveries take turns).
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [2]))
        #expect(eventually { counters.datagramsReceived.load(ordering: .relaxed) == 2 })

        let first = try Self.receiveBatch(socket)  // the datagram in the ring, not the error behind it
        #expect(first.first?.bytes == [1])
        var events = first.map { "datagram \($0.bytes)" }
        for _ in 0..<3 {
            do throws(SocketError) {
                events += try Self.receiveBatch(socket).map { "datagram \($0.bytes)" }
            } catch {
                events.append("\(error)")
            }
        }
        // Each once: the error where the channel had it, or after the ring's datagrams.
        #expect(events == ["datagram [1]", "\(SocketError.notConnected)", "datagram [2]"]
                || events == ["datagram [1]", "datagram [2]", "\(SocketError.notConnected)"])
    }

    /// When the datagram a batch saw coming is gone by the time it takes it
    /// (another thread took it, or here the ring broke), the error the
    /// batch found instead is the next call's, not lost.
    @Test func anErrorABatchTookAfterItsDatagramsComesWithTheNextCall() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        #expect(try Self.receiveBatch(socket).isEmpty)  // asks for the region
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [1]))
        let counters = served.service.counters
        #expect(eventually { counters.datagramsReceived.load(ordering: .relaxed) == 1 })
        // Behind the datagram, a record of length 0 (zeroed memory), which no service writes.
        let region = try #require(socket.region)
        let toClient = tsr_region_to_client(region, TSR_REGION_CAPACITY)!.assumingMemoryBound(to: tsr_shared.self)
        let tail = toClient.pointee.tail
        toClient.pointee.tail = tail + 8
        #expect(try Self.receiveBatch(socket).map(\.bytes) == [[1]])
        toClient.pointee.tail = tail  // mended: only the error taken meanwhile is left
        #expect(throws: SocketError.self) { try Self.receiveBatch(socket) }
        #expect(try Self.receiveBatch(socket).isEmpty)
    }

    @Test func aSendBatchLeavesInOrderAndReportsEachRefusal() throws {
        let served = try ServedHost()
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        let tooLong = [UInt8](repeating: 0, count: 65508)
        let batch: [([UInt8], SocketAddress)] = [
            (Array("first".utf8), peer),
            (tooLong, peer),
            ([1], SocketAddress(IPv4Address(10, 0, 0, 1), 9)),
            (Array("second".utf8), peer),
        ]
        var offered = 0
        var refusals: [SocketError] = []
        let (taken, blocked) = Self.withCopies(of: batch.map(\.0)) { payloads in
            socket.send(batch: {
                guard offered < batch.count else { return nil }
                defer { offered += 1 }
                return (payloads[offered], batch[offered].1)
            }, failed: { refusals.append($0) })
        }
        #expect(taken == 4 && !blocked)
        #expect(refusals == [.messageTooLong, .networkUnreachable])
        for payload in [Array("first".utf8), Array("second".utf8)] {
            let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
            #expect(Int(frame[38]) << 8 | Int(frame[39]) == 8 + payload.count)
            #expect(Array(frame[42..<(42 + payload.count)]) == payload)
            #expect(Array(frame[30..<34]) == [192, 0, 2, 1] && Array(frame[36..<38]) == [0x8b, 0xcd])
        }
        #expect(served.link.nextTransmitted(timeoutMilliseconds: 0) == nil)
    }

    /// Batches beyond what the ring and the channel hold while the link is
    /// full: a batch reports where it stopped, and every datagram leaves
    /// once, in order, when offered again.
    @Test func sendBatchesBeyondTheRingLeaveInOrder() throws {
        let served = try ServedHost()
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        let count: UInt32 = 2000
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1000, alignment: 8)
        defer { scratch.deallocate() }
        var sent: UInt32 = 0
        var seen: [UInt32] = []
        var blockedBatches = 0
        var idleRounds = 0
        while seen.count < Int(count) && idleRounds < 500 {
            var progressed = false
            let (taken, blocked) = socket.send(batch: {
                guard sent < count else { return nil }
                // One buffer for all: each payload is copied before `next` is called again.
                SharedRegionTests.numbered(sent, size: 1000).withUnsafeBytes { scratch.copyMemory(from: $0) }
                sent += 1
                return (UnsafeRawBufferPointer(scratch), peer)
            }, failed: { Issue.record("refused: \($0)") })
            if blocked {
                sent -= 1  // offered, not taken: offered again
                blockedBatches += 1
            }
            progressed = taken > 0
            while let frame = served.link.nextTransmitted(timeoutMilliseconds: progressed ? 0 : 10) {
                seen.append(SharedRegionTests.sequence(of: frame[42...]))
                progressed = true
            }
            idleRounds = progressed ? 0 : idleRounds + 1
        }
        #expect(seen == Array(0..<count))
        #expect(blockedBatches > 0)  // the scenario: the ring and the channel filled up
    }

    @Test func aClosedSocketFailsEachDatagramOfABatch() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        socket.close()
        var offered = 0
        var refusals: [SocketError] = []
        let (taken, blocked) = Self.withCopies(of: [[1, 2, 3]]) { payloads in
            socket.send(batch: {
                guard offered < 3 else { return nil }
                offered += 1
                return (payloads[0], peer)
            }, failed: { refusals.append($0) })
        }
        #expect(taken == 3 && !blocked && refusals == [.closed, .closed, .closed])
        #expect(throws: SocketError.closed) { try Self.receiveBatch(socket) }
    }

    /// A batch goes on from the ring to the channel: datagrams the full ring
    /// sent there come next, although a batch looks at the channel only when
    /// the service counted something sent there since a receive found it
    /// empty (no system call per datagram otherwise).
    @Test func aBatchTakesTheDatagramsAFullRingSentOnTheChannel() throws {
        let served = try ServedHost()
        let counters = served.service.counters
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        socket.receiveBufferSize = 4 << 20
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }  // asks for the region
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }  // finds ring and channel empty
        let count = 200  // the ring holds 123 of these
        for sequence in 0..<count {
            let frame = FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7,
                                              payload: SharedRegionTests.numbered(UInt32(sequence), size: 1000))
            #expect(eventually { served.link.inject(frame) })
        }
        // The stack's queue may overflow while the service is behind: those are counted.
        func dropped() -> UInt64 { served.host.counters[.udpDropQueueFull] }
        #expect(eventually { served.host.counters[.udpRxDelivered] + dropped() == UInt64(count) })
        #expect(eventually { counters.regionFallbacks.load(ordering: .relaxed) > 0 }, "the ring filled up")
        var got = try Self.receiveBatch(socket, slots: 256, slotSize: 1024).map { SharedRegionTests.sequence(of: $0.bytes) }
        #expect(got.count > 123)  // the first batch went on past the ring's 123
        // The rest (the channel had no room for all of it at once).
        while got.count + Int(dropped()) < count, let datagram = try? socket.receive(timeout: .seconds(5)) {
            got.append(SharedRegionTests.sequence(of: datagram.payload))
        }
        #expect(got.count + Int(dropped()) == count)
        #expect(zip(got, got.dropFirst()).allSatisfy { $0 < $1 })  // in order, none twice
    }

    /// What a batch (and the shim's recvmmsg) asks before each datagram
    /// after the first: whether a datagram comes next, in the ring or at the
    /// head of the channel, as opposed to nothing or an error.
    @Test func theNextDatagramIsToldApartFromAnErrorAndFromNothing() throws {
        let served = try ServedHost()
        let counters = served.service.counters
        var ring = try SharedRegionTests.ringSocket(served, port: 7)
        defer { tsc_close(&ring) }
        #expect(tsc_datagram_next(&ring) == 0)
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [1]))
        #expect(eventually { counters.datagramsReceived.load(ordering: .relaxed) == 1 })
        #expect(tsc_datagram_next(&ring) == 1)
        let byte = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
        defer { byte.deallocate() }
        var part = iovec(iov_base: byte.baseAddress, iov_len: 1)
        var address = tsp_address(), port: UInt16 = 0, cut: Int32 = 0
        #expect(tsc_recvv(&ring, &part, 1, &address, &port, Int32(MSG_DONTWAIT), &cut) == 1 && byte[0] == 1)
        #expect(tsc_datagram_next(&ring) == 0)
        // A refusal on the channel: readable, and still no datagram next.
        _ = [UInt8](repeating: 0, count: 3).withUnsafeBytes { send(ring.data_fd, $0.baseAddress, $0.count, 0) }
        var descriptor = pollfd(fd: ring.data_fd, events: Int16(POLLIN), revents: 0)
        try #require(poll(&descriptor, 1, 5000) == 1)
        #expect(tsc_datagram_next(&ring) == 0)
        #expect(tsc_recvv(&ring, &part, 1, &address, &port, Int32(MSG_DONTWAIT), &cut) == -1 && errno == ENOTCONN)

        // A socket that never asked for a region: its datagrams head the channel.
        var plain = tsc_socket()
        try #require(tsc_open(&plain, served.path, AF_INET, Int32(SOCK_NONBLOCK.rawValue)) == 0)
        defer { tsc_close(&plain) }
        var any = tsp_address_v4(0)
        try #require(tsc_bind(&plain, &any, 8) == 0)
        #expect(tsc_datagram_next(&plain) == 0)
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 8, payload: [2]))
        descriptor = pollfd(fd: plain.data_fd, events: Int16(POLLIN), revents: 0)
        try #require(poll(&descriptor, 1, 5000) == 1)
        #expect(tsc_datagram_next(&plain) == 1)
    }
}
