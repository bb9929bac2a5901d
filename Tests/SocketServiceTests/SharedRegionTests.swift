import CTapstackChannel
import CTapstackSystem
import Glibc
import SocketService
import Sockets
import Synchronization
@testable import TapstackClient
import Testing
import TestSupport
import Wire

/// The socket service's shared-memory rings (TSP_RING) as clients see them:
/// datagrams both ways, order when a ring is full, readiness on the
/// channel, and a client that breaks its own region.
@Suite(.serialized) struct SharedRegionTests {
    /// A payload of `size` bytes that starts with `sequence`.
    static func numbered(_ sequence: UInt32, size: Int) -> [UInt8] {
        withUnsafeBytes(of: sequence.bigEndian) { Array($0) } + [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: size - 4)
    }

    static func sequence(of payload: some Collection<UInt8>) -> UInt32 {
        payload.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// A nonblocking socket bound to `port` with its region mapped, through
    /// the C client itself (so a test can write into the region as a
    /// hostile client would). The caller closes it.
    /// `receiveBuffer` (SO_RCVBUF) also bounds its channel.
    static func ringSocket(_ served: ServedHost, port: UInt16, receiveBuffer: Int32? = nil) throws -> tsc_socket {
        var socket = tsc_socket()
        try #require(tsc_open(&socket, served.path, AF_INET, Int32(SOCK_NONBLOCK.rawValue)) == 0)
        var any = tsp_address_v4(0)
        let ready = tsc_bind(&socket, &any, port) == 0
            && receiveBuffer.map { tsc_setopt(&socket, Int32(TSP_OPT_RCVBUF.rawValue), $0) == 0 } ?? true
            && tsc_use_ring(&socket, 1) == 0
        if !ready { tsc_close(&socket) }
        try #require(ready, "bound, its region mapped")
        return socket
    }

    /// With the link watching the clients' doorbells (the default), the
    /// executor takes their datagrams itself; without, the service thread does.
    @Test(arguments: [true, false])
    func datagramsCrossTheRegionBothWaysByteForByte(watchesDoorbells: Bool) throws {
        let served = try ServedHost(watchesDescriptors: watchesDoorbells)
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }  // the first receive asks for the region
        #expect(served.service.counters.regionsShared.load(ordering: .relaxed) == 1)
        for round in 0..<50 {
            let payload = Self.numbered(UInt32(round), size: 1 + 4 + round * 29)
            served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload))
            let datagram = try socket.receive(timeout: .seconds(5))
            #expect(datagram.payload == payload && datagram.source == peer)
            try socket.send(payload, to: peer)
            let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
            // The UDP length and the payload (a short frame is padded to 60 bytes).
            #expect(Int(frame[38]) << 8 | Int(frame[39]) == 8 + payload.count)
            #expect(Array(frame[42..<(42 + payload.count)]) == payload)
        }
        #expect(served.service.counters.regionsShared.load(ordering: .relaxed) == 1)
        #expect(served.service.counters.regionFallbacks.load(ordering: .relaxed) == 0)
        // Put there by the stack's executor, without the service thread: all
        // but the first, for which the service thread first saw that nothing
        // older waited on the channel.
        #expect(served.service.counters.regionDirect.load(ordering: .relaxed) >= 49)
        // Each datagram was sent while the executor slept or was about to:
        // all but the first (on the channel: the client starts there) woke
        // it through the client's eventfd, and the executor sent them.
        // Without it, the channel's doorbell woke the service thread (which
        // sent them, unless the executor was still awake to see them first).
        let counters = served.service.counters
        #expect(eventually { counters.datagramsSent.load(ordering: .relaxed) == 50 })  // counted after the frame left
        if watchesDoorbells { #expect(counters.regionSendsDirect.load(ordering: .relaxed) >= 49) }
    }

    /// The service rings a doorbell on the channel for a datagram it puts in
    /// the ring; one that outlived its datagram would make poll report
    /// readable with nothing to read, and a blocking reader (nc) hang.
    @Test func anEmptiedRingLeavesTheDescriptorUnreadable() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }
        var readableWithNothing = 0
        for round in 0..<300 {
            let payload = Self.numbered(UInt32(round), size: 64)
            served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload))
            var descriptor = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
            try #require(poll(&descriptor, 1, 5000) == 1)
            #expect(try socket.receive().payload == payload)
            descriptor.revents = 0
            if poll(&descriptor, 1, 0) != 0 { readableWithNothing += 1 }
        }
        #expect(readableWithNothing == 0)
    }

    /// More than the ring holds while the client does not read: the rest
    /// goes on the channel, and the client still gets every datagram once, in order.
    @Test func aFullRingFallsBackToTheChannelWithoutReordering() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        socket.receiveBufferSize = 4 << 20
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }
        let count: UInt32 = 600
        for sequence in 0..<count {
            let frame = FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: Self.numbered(sequence, size: 1000))
            #expect(eventually { served.link.inject(frame) })
        }
        // The stack's queue may overflow while the service is behind: those are counted.
        func dropped() -> Int {
            Int(served.host.counters.all.first { $0.counter.name == "udp.drop_queue_full" }?.value ?? 0)
        }
        var received: [UInt32] = []
        while received.count + dropped() < Int(count), let datagram = try? socket.receive(timeout: .seconds(5)) {
            received.append(Self.sequence(of: datagram.payload))
        }
        #expect(received.count + dropped() == Int(count))
        #expect(zip(received, received.dropFirst()).allSatisfy { $0 < $1 })  // in order, none twice
        #expect(received.count > 128)  // more than the ring holds (123 of these): the channel carried the rest
        #expect(served.service.counters.regionFallbacks.load(ordering: .relaxed) > 0)
    }

    /// A doorbell the full channel could not take is sent once there is
    /// room: every doorbell counted reaches the client, or a receiver that
    /// emptied the ring would wait for one that never comes.
    @Test func doorbellsAreNeverLostToAFullChannel() throws {
        let served = try ServedHost()
        var client = try Self.ringSocket(served, port: 7, receiveBuffer: 96 << 10)  // a small channel
        defer { tsc_close(&client) }
        let header = try #require(client.ring).assumingMemoryBound(to: tsr_region_header.self)
        var buffer = [UInt8](repeating: 0, count: 2048)
        var received = 0
        for burst in 0..<20 {
            // More than ring and channel hold, then read everything.
            for sequence in 0..<300 {
                let frame = FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7,
                                                  payload: Self.numbered(UInt32(burst * 300 + sequence), size: 900))
                #expect(eventually { served.link.inject(frame) })
            }
            var idle = 0
            while idle < 20 {
                var address = tsp_address(), port: UInt16 = 0, truncated: Int32 = 0
                var part = iovec(iov_base: buffer.withUnsafeMutableBytes { $0.baseAddress }, iov_len: buffer.count)
                if tsc_recvv(&client, &part, 1, &address, &port, Int32(MSG_DONTWAIT), &truncated) >= 0 {
                    received += 1
                    idle = 0
                } else {
                    var descriptor = pollfd(fd: client.data_fd, events: Int16(POLLIN), revents: 0)
                    if poll(&descriptor, 1, 20) == 0 { idle += 1 }
                }
            }
            #expect(header.pointee.doorbells == header.pointee.doorbells_taken)
        }
        #expect(received > 0)
        #expect(served.service.counters.regionFallbacks.load(ordering: .relaxed) > 0)
        var descriptor = pollfd(fd: client.data_fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&descriptor, 1, 0) == 0)
    }

    /// A doorbell the full channel refused is owed (counted) and sent once
    /// the client makes room, exactly once: a client that emptied the ring
    /// and sleeps on its descriptor is still woken for the next datagram.
    @Test func aDoorbellTheFullChannelRefusedIsSentWhenThereIsRoom() throws {
        let served = try ServedHost()
        var client = try Self.ringSocket(served, port: 7, receiveBuffer: 4096)  // a channel of a few doorbells
        defer { tsc_close(&client) }
        let region = try #require(client.ring)
        let header = region.assumingMemoryBound(to: tsr_region_header.self)
        var ring = tsr_end()
        try #require(tsr_attach(&ring, tsr_region_to_client(region, TSR_REGION_CAPACITY), TSR_REGION_CAPACITY, 0) == 0)
        var record = [UInt8](repeating: 0, count: 2048)
        func takeFromRing(_ payload: [UInt8]) {
            var length = 0
            #expect(eventually { length = record.withUnsafeMutableBytes { tsr_pop(&ring, $0.baseAddress, $0.count, 0) }; return length != 0 })
            #expect(length > payload.count && Array(record[(length - payload.count)..<length]) == payload)
        }
        let deferred = { served.service.counters.doorbellsDeferred.load(ordering: .relaxed) }
        // Each datagram finds the ring empty and rings; taking it from the
        // ring without reading the channel leaves the doorbells there.
        var sent: UInt32 = 0
        while deferred() == 0 && sent < 2000 {
            let payload = Self.numbered(sent, size: 64)
            #expect(eventually { served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload)) })
            takeFromRing(payload)
            sent += 1
        }
        try #require(deferred() == 1, "the channel filled with doorbells after \(sent) datagrams")
        let rung = header.pointee.doorbells
        // Reading the channel makes room; the owed doorbell follows, once.
        var taken: UInt32 = 0
        var bell = tsp_datagram_header()
        var descriptor = pollfd(fd: client.data_fd, events: Int16(POLLIN), revents: 0)
        while taken < rung && poll(&descriptor, 1, 5000) == 1 {
            let length = withUnsafeMutableBytes(of: &bell) { recv(client.data_fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if length == MemoryLayout<tsp_datagram_header>.size && bell.magic == TSP_MAGIC && UInt32(bell.kind) == TSP_DOORBELL.rawValue { taken += 1 }
        }
        #expect(taken == rung)
        #expect(header.pointee.doorbells == rung)
        #expect(poll(&descriptor, 1, 0) == 0)
        // The socket is back on its ring: the next datagram rings once more.
        let last = Self.numbered(sent, size: 64)
        #expect(eventually { served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: last)) })
        #expect(poll(&descriptor, 1, 5000) == 1)
        takeFromRing(last)
        #expect(header.pointee.doorbells == rung + 1)
        #expect(deferred() == 1)
    }

    /// The executor rings a client's doorbell once, at the end of its turn,
    /// and not at all when the client took the turn's datagrams meanwhile:
    /// the descriptor is not left readable with nothing to read.
    @Test func noDoorbellWhenTheClientTookTheTurnsDatagramsBeforeItEnded() throws {
        let served = try ServedHost()
        var client = try Self.ringSocket(served, port: 7)
        defer { tsc_close(&client) }
        let region = try #require(client.ring)
        let header = region.assumingMemoryBound(to: tsr_region_header.self)
        let host = served.host
        // A socket of the stack's own whose work, queued before the
        // service's delivery in the same turn, takes the client's datagram
        // at the end of the turn, before the doorbell would be rung.
        let taken = try Self.takeFromRingAtEndOfTurn(host, ring: region, port: 9)
        var descriptor = pollfd(fd: client.data_fd, events: Int16(POLLIN), revents: 0)
        try Self.warmUpUntilTheExecutorDelivers(served, &client)
        // Both frames in one batch: the executor is held until both wait.
        let release = Self.holdTheExecutor(host)
        let rung = header.pointee.doorbells
        let payload = Self.numbered(1, size: 64)
        #expect(served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 9, payload: [9])))
        #expect(served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload)))
        release()
        #expect(host.waitUntilIdle())
        let record = taken.bytes
        #expect(record.count > payload.count && Array(record.suffix(payload.count)) == payload)
        #expect(header.pointee.doorbells == rung)
        #expect(poll(&descriptor, 1, 0) == 0)
        // A datagram the client leaves there is rung for, once.
        #expect(served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload)))
        #expect(poll(&descriptor, 1, 5000) == 1)
        #expect(header.pointee.doorbells == rung + 1)
    }

    /// A client that polls its ring, and whose answer the executor awaits,
    /// takes what it was given within a look or two, but not always before
    /// the executor's turn ends: its doorbell is left to the next turn, and
    /// is not rung at all once the client took the datagrams. Datagrams it
    /// leaves there past the wait are rung for (its poll has ended, or its
    /// hint lies): the wait's end bounds how late the doorbell comes.
    @Test func aPollingClientsDoorbellWaitsWhileItsAnswerIsAwaited() throws {
        try #require(sysconf(Int32(_SC_NPROCESSORS_ONLN)) >= 2, "the client's hint names a CPU other than the executor's")
        let served = try ServedHost(executorCPUs: [0])
        var client = try Self.ringSocket(served, port: 7)
        defer { tsc_close(&client) }
        let region = try #require(client.ring)
        let header = region.assumingMemoryBound(to: tsr_region_header.self)
        let host = served.host, counters = served.service.counters
        var descriptor = pollfd(fd: client.data_fd, events: Int16(POLLIN), revents: 0)
        try Self.warmUpUntilTheExecutorDelivers(served, &client)
        // The hint of a receive polling on CPU 1; the test takes the datagrams itself.
        header.pointee.polling_us = 200
        header.pointee.polling_cpu = 2
        // A socket of the stack's own whose work, queued after the service's
        // delivery in the same turn, takes the client's datagram right after
        // the end of the turn's doorbell decision.
        let taken = try Self.takeFromRingAtEndOfTurn(host, ring: region, port: 9)
        // Both frames in one batch, the client's first: the executor is held until both wait.
        let release = Self.holdTheExecutor(host)
        let rung = header.pointee.doorbells, rungCount = counters.doorbellsRung.load(ordering: .relaxed)
        let waits = counters.answerWaits.load(ordering: .relaxed)
        let payload = Self.numbered(1, size: 64)
        #expect(served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload)))
        #expect(served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 9, payload: [9])))
        release()
        #expect(host.waitUntilIdle())
        #expect(counters.answerWaits.load(ordering: .relaxed) == waits + 1, "the executor awaited the answer")
        let record = taken.bytes
        #expect(record.count > payload.count && Array(record.suffix(payload.count)) == payload)
        #expect(header.pointee.doorbells == rung)
        #expect(counters.doorbellsRung.load(ordering: .relaxed) == rungCount)
        #expect(poll(&descriptor, 1, 0) == 0)
        // Left there, with the hint still up: rung for once the wait is over.
        #expect(served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload)))
        #expect(poll(&descriptor, 1, 5000) == 1)
        #expect(counters.answerWaits.load(ordering: .relaxed) == waits + 2)
        #expect(header.pointee.doorbells == rung + 1)
        #expect(counters.doorbellsRung.load(ordering: .relaxed) == rungCount + 1)
    }

    /// The library's own descriptors (the control connection, the ring's
    /// doorbell) sit high: a program that closes one it did not open and
    /// opens a file gets a lower number, and the doorbell the library then
    /// writes to the closed descriptor fails (the channel's serves) instead
    /// of landing in the program's file.
    @Test func aProgramsNextFileDoesNotTakeTheDoorbellsDescriptor() throws {
        let served = try ServedHost()
        served.learnPeer()
        var client = try Self.ringSocket(served, port: 7)
        defer { tsc_close(&client) }
        var limit = rlimit()
        try #require(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0)
        let base = Int32(min(Int(limit.rlim_cur), 1024) - 128)
        let wake = client.ring_wake - 1
        #expect(client.control_fd >= base && wake >= base && client.data_fd < base)
        // The program closes the doorbell's descriptor, then opens a file.
        #expect(close(wake) == 0)
        let path = "/tmp/tapstack-test-\(getpid())-doorbell"
        let file = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        try #require(file >= 0)
        defer { close(file); unlink(path) }
        #expect(file < wake)
        // Datagrams sent while the executor sleeps: each asks for a doorbell.
        var destination = tsp_address_v4(IPv4Address(192, 0, 2, 1).rawValue.bigEndian)
        for round in 0..<5 {
            #expect(served.host.waitUntilIdle())
            var payload = Self.numbered(UInt32(round), size: 32)
            let sent = payload.withUnsafeMutableBytes { bytes in
                var part = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
                return tsc_sendv(&client, &part, 1, &destination, 35789, 0)
            }
            #expect(sent == 32)
            let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
            #expect(Array(frame[42..<74]) == payload)
        }
        var status = stat()
        #expect(fstat(file, &status) == 0 && status.st_size == 0)
    }

    /// A process of the socket that died holding one of the region's locks
    /// (a blocking send on a full channel holds the send lock; SIGKILL can
    /// come at any point) does not lock the socket's other processes out:
    /// the next sender and receiver take the lock over and carry on. The
    /// holder here is a thread that ends with the locks held (the kernel
    /// hands robust locks on at a thread's exit as at a process's).
    @Test func aHolderThatDiedWithTheRegionsLocksDoesNotLockTheOthersOut() throws {
        let served = try ServedHost()
        served.learnPeer()
        var client = try Self.ringSocket(served, port: 7)
        defer { tsc_close(&client) }
        let region = try #require(client.ring)
        func lock(_ field: KeyPath<tsr_region_header, tsr_region_lock>) throws -> UnsafeMutablePointer<pthread_mutex_t> {
            let offset = try #require(MemoryLayout<tsr_region_header>.offset(of: field))
            return (region + offset).assumingMemoryBound(to: pthread_mutex_t.self)
        }
        let locks = [try lock(\.send_lock), try lock(\.receive_lock)]
        let held = Atomic<Int>(0)
        nonisolated(unsafe) let shared = locks
        let holder = JoinableThread(name: "dies-holding") {
            for mutex in shared where pthread_mutex_lock(mutex) == 0 { held.add(1, ordering: .sequentiallyConsistent) }
        }
        holder.join()
        try #require(held.load(ordering: .sequentiallyConsistent) == 2, "the thread ended holding both locks")
        // On another thread, so that a lock never handed on fails the test instead of hanging it.
        let done = Event()
        nonisolated(unsafe) var socket = client
        let outcome = Mutex<(sent: Int, received: Int, payload: [UInt8])>((-1, -1, []))
        let worker = JoinableThread(name: "survivor") {
            var payload = Self.numbered(7, size: 48)
            var destination = tsp_address_v4(IPv4Address(192, 0, 2, 1).rawValue.bigEndian)
            let sent = payload.withUnsafeMutableBytes { bytes in
                var part = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
                return tsc_sendv(&socket, &part, 1, &destination, 35789, 0)
            }
            var buffer = [UInt8](repeating: 0, count: 2048)
            var received = -1
            for _ in 0..<500 where received < 0 {
                var address = tsp_address(), port: UInt16 = 0, truncated: Int32 = 0
                received = buffer.withUnsafeMutableBytes { bytes in
                    var part = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
                    return tsc_recvv(&socket, &part, 1, &address, &port, Int32(MSG_DONTWAIT), &truncated)
                }
                if received < 0 {
                    var descriptor = pollfd(fd: socket.data_fd, events: Int16(POLLIN), revents: 0)
                    _ = poll(&descriptor, 1, 10)
                }
            }
            outcome.withLock { $0 = (sent, received, Array(buffer.prefix(max(received, 0)))) }
            done.signal()
        }
        let answer = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000), "the survivor's datagram left")
        #expect(answer.count >= 90 && Array(answer[42..<90]) == Self.numbered(7, size: 48))
        let inbound = Self.numbered(8, size: 40)
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: inbound))
        try #require(done.wait(timeoutMilliseconds: 10_000), "the survivor's send and receive returned")
        worker.join()
        let result = outcome.withLock { $0 }
        #expect(result.sent == 48)
        #expect(result.received == 40 && result.payload == inbound)
    }

    /// The client's sends: a full ring falls back to the channel and the
    /// service still hands the stack every datagram once, in order.
    @Test func sendsBeyondTheRingLeaveInOrder() throws {
        let served = try ServedHost()
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        let count: UInt32 = 2000
        var sent: UInt32 = 0
        var seen: [UInt32] = []
        var idleRounds = 0
        while seen.count < Int(count) && idleRounds < 500 {
            var progressed = false
            while sent < count {
                do {
                    try socket.send(Self.numbered(sent, size: 1000), to: peer)
                    sent += 1
                    progressed = true
                } catch .wouldBlock {
                    break
                }
            }
            while let frame = served.link.nextTransmitted(timeoutMilliseconds: progressed ? 0 : 10) {
                seen.append(Self.sequence(of: frame[42...]))
                progressed = true
            }
            idleRounds = progressed ? 0 : idleRounds + 1
        }
        #expect(seen == Array(0..<count))
    }

    /// A client that writes impossible indices or lengths into its region
    /// loses that socket (counted); other clients carry on.
    /// The doorbell that makes the stack look goes on the channel (the
    /// service thread finds the damage) or to the eventfd (the executor does).
    @Test(arguments: ["tail not a record boundary", "tail past the ring", "record longer than half the ring", "head of the other ring"],
          ["channel", "eventfd"])
    func aClientThatBreaksItsRegionLosesOnlyThatSocket(_ damage: String, doorbell: String) throws {
        let served = try ServedHost()
        served.learnPeer()
        let bystander = try TapstackClient.UDPSocket(servicePath: served.path)
        try bystander.bind(port: 9)
        var hostile = try Self.ringSocket(served, port: 7)
        defer { tsc_close(&hostile) }
        let region = try #require(hostile.ring)
        let capacity = TSR_REGION_CAPACITY
        let toService = tsr_region_to_service(region, capacity)!.assumingMemoryBound(to: tsr_shared.self)
        let toClient = tsr_region_to_client(region, capacity)!.assumingMemoryBound(to: tsr_shared.self)
        switch damage {
        case "tail not a record boundary": toService.pointee.tail = 12
        case "tail past the ring": toService.pointee.tail = capacity + 64
        case "record longer than half the ring":
            let data = UnsafeMutableRawPointer(toService) + MemoryLayout<tsr_shared>.size
            data.storeBytes(of: capacity, as: UInt32.self)
            toService.pointee.tail = 64
        default:
            // The client's head of the ring toward it, ahead of what the service wrote.
            toClient.pointee.head = 4096
        }
        if damage == "head of the other ring" {
            served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [1, 2, 3]))
        } else if doorbell == "eventfd" {
            try #require(hostile.ring_wake > 0)
            var one: UInt64 = 1
            #expect(write(hostile.ring_wake - 1, &one, 8) == 8)
        } else {
            var bell = tsp_datagram_header()
            bell.magic = TSP_MAGIC
            bell.kind = UInt8(TSP_DOORBELL.rawValue)
            _ = withUnsafeBytes(of: bell) { send(hostile.data_fd, $0.baseAddress, $0.count, 0) }
        }
        #expect(served.waitForOpenSockets(1))
        #expect(served.service.counters.brokenRegions.load(ordering: .relaxed) == 1)
        // Its channel is closed: the client learns it on its next receive.
        var descriptor = pollfd(fd: hostile.data_fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&descriptor, 1, 5000) == 1 && descriptor.revents & Int16(POLLHUP) != 0)
        // The other client is untouched.
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 9, payload: [4, 5, 6]))
        #expect(try bystander.receive(timeout: .seconds(5)).payload == [4, 5, 6])
        try bystander.send([7, 8], to: peer)
        let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
        #expect(Array(frame[42..<44]) == [7, 8])
    }

    /// A client that writes its doorbell eventfd without end only makes the
    /// executor look at the rings more often: another client's datagrams
    /// still cross both ways, byte for byte, and nothing is counted broken.
    @Test func aClientRingingWithoutEndHarmsNobody() throws {
        let served = try ServedHost()
        served.learnPeer()
        var noisy = try Self.ringSocket(served, port: 7)
        defer { tsc_close(&noisy) }
        let wake = noisy.ring_wake - 1
        try #require(wake >= 0)
        let stop = Atomic<Bool>(false)
        let rings = Atomic<Int>(0)
        let ringer = JoinableThread(name: "noisy-client") {
            var value: UInt64 = 1
            while !stop.load(ordering: .relaxed) && rings.load(ordering: .relaxed) < 1_000_000 {
                if write(wake, &value, 8) == 8 { rings.add(1, ordering: .relaxed) }
            }
        }
        defer {
            stop.store(true, ordering: .relaxed)
            ringer.join()
        }
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 9)
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }
        #expect(eventually { rings.load(ordering: .relaxed) > 1000 })
        for round in 0..<30 {
            let payload = Self.numbered(UInt32(round), size: 100 + round)
            served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 9, payload: payload))
            #expect(try socket.receive(timeout: .seconds(5)).payload == payload)
            try socket.send(payload, to: peer)
            let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
            #expect(Array(frame[42..<(42 + payload.count)]) == payload)
        }
        #expect(served.service.counters.brokenRegions.load(ordering: .relaxed) == 0)
        #expect(served.service.openSockets == 2)
    }

    /// `busyPollMicroseconds` (SO_BUSY_POLL): a waiting receive polls the
    /// ring first, so a datagram the stack puts there meanwhile is taken
    /// without the thread sleeping. Without it the same wait sleeps (the
    /// datagram then comes only once the thread is asleep); so does a wait
    /// on the CPU the stack's executor last ran on, where polling would
    /// keep the executor from running (`onExecutorCPU`: the executor and
    /// the waiter pinned to CPU 0; otherwise the waiter on CPU 1).
    @Test(arguments: [(1_000_000, false), (0, false), (1_000_000, true)])
    func aBusyPollingWaitTakesADatagramWithoutSleeping(microseconds: Int, onExecutorCPU: Bool) throws {
        let (served, socket) = try Self.adaptiveReceiverBesideAnExecutorOnCPU0()
        socket.busyPollMicroseconds = microseconds
        #expect(socket.busyPollMicroseconds == microseconds)

        let waiter = Atomic<Int32>(0)  // the waiting thread's id, once it is about to wait
        let injectorTimedOut = Atomic<Bool>(false)  // its deadline passed before what it waited for
        let link = served.link
        let polls = microseconds > 0 && !onExecutorCPU
        let injector = JoinableThread(name: "injector") {
            let deadline = Deadline(.seconds(5))
            while waiter.load(ordering: .acquiring) == 0 && !deadline.hasPassed { usleep(100) }
            // A sleeping wait gets its datagram only once it sleeps.
            if !polls {
                while !Self.isSleeping(thread: waiter.load(ordering: .acquiring)) && !deadline.hasPassed { usleep(100) }
            }
            injectorTimedOut.store(deadline.hasPassed, ordering: .releasing)
            link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [3]))
        }
        let outcome = Mutex<(payload: [UInt8], waited: Duration, sleeps: Int)?>(nil)
        let receiver = JoinableThread(name: "receiver") {
            var cpu: Int32 = onExecutorCPU ? 0 : 1
            _ = csys_pin_thread(&cpu, 1)
            let before = Self.voluntarySwitches()
            let started = ContinuousClock.now
            waiter.store(Int32(csys_thread_id()), ordering: .releasing)
            let datagram = try? socket.receive(timeout: .seconds(5))
            let waited = ContinuousClock.now - started
            outcome.withLock { $0 = (datagram?.payload ?? [], waited, Self.voluntarySwitches() - before) }
        }
        receiver.join()
        injector.join()
        let timedOut = injectorTimedOut.load(ordering: .acquiring)
        #expect(!timedOut, "the injector's deadline passed before the wait began (or, without polling, slept)")
        let result = try #require(outcome.withLock { $0 })
        #expect(result.payload == [3])
        if polls {
            #expect(result.sleeps == 0)
            // Caught in the ring by the poll, not found on the channel once the second of polling was over.
            #expect(result.waited < .milliseconds(500))
        } else {
            #expect(result.sleeps > 0)
            // On the executor's CPU it slept at once: it did not poll its second first.
            if microseconds > 0 { #expect(result.waited < .milliseconds(500)) }
        }
    }

    /// A receiver in a dense stream (TSC_POLL_JOIN_BATCH or more datagrams
    /// taken between two waits) sleeps on the CPU of the stack's executor:
    /// its wait moves it there first, and puts its affinity back as it was,
    /// so that the executor's doorbell is a switch on that CPU rather than
    /// an interrupt to another, idle one. After fewer it sleeps where it
    /// is, and so does a receiver whose affinity leaves that CPU out. (The
    /// executor is pinned to CPU 0; the receiver begins on CPU 1.)
    @Test(arguments: [(true, Int(TSC_POLL_JOIN_BATCH)), (true, Int(TSC_POLL_JOIN_BATCH) - 1), (false, Int(TSC_POLL_JOIN_BATCH))])
    func aReceiverInADenseStreamSleepsOnTheExecutorsCPU(mayRunThere: Bool, batch: Int) throws {
        let (served, socket) = try Self.adaptiveReceiverBesideAnExecutorOnCPU0()
        let counters = served.service.counters

        let waiter = Atomic<Int32>(0)  // the receiving thread's id, once it is about to wait
        let asleep = Mutex<(cpu: Int, allowed: String?)?>(nil)  // where it slept, and its affinity then
        let link = served.link
        let injector = JoinableThread(name: "injector") {
            // Once the receive sleeps: where, and its affinity then (none
            // recorded if it never did within the deadline).
            _ = eventually {
                let id = waiter.load(ordering: .acquiring)
                guard id != 0, let now = Self.scheduling(ofThread: id), now.state == "S" else { return false }
                asleep.withLock { $0 = (now.cpu, Self.allowedCPUs(ofThread: id)) }
                return true
            }
            link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [200]))
        }
        let received = Mutex<(payloads: [[UInt8]], allowedAfter: String?)>(([], nil))
        let receiver = JoinableThread(name: "receiver") {
            var one: Int32 = 1, both: [Int32] = [0, 1]
            _ = csys_pin_thread(&one, 1)  // moves it to CPU 1, and keeps it there through the sleep that follows
            // A wait that ends empty, so that what is taken next is counted from it,
            var payloads: [[UInt8]] = []
            do { payloads.append(try socket.receive(timeout: .milliseconds(1)).payload) } catch {}
            // then `batch` datagrams in the ring before it looks.
            let before = counters.regionDirect.load(ordering: .relaxed)
            for sequence in 1...batch {
                link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [UInt8(sequence)]))
            }
            _ = eventually { counters.regionDirect.load(ordering: .relaxed) - before >= batch }
            for _ in 1...batch { payloads.append((try? socket.receive(timeout: .seconds(5)))?.payload ?? []) }
            // Lets it run on CPU 0 again, where the kernel does not move it
            // back: only its wait can.
            if mayRunThere { _ = csys_pin_thread(&both, 2) }
            let id = Int32(csys_thread_id())
            waiter.store(id, ordering: .releasing)
            payloads.append((try? socket.receive(timeout: .seconds(5)))?.payload ?? [])
            received.withLock { $0 = (payloads, Self.allowedCPUs(ofThread: id)) }
        }
        receiver.join()
        injector.join()
        let result = received.withLock { $0 }
        #expect(result.payloads == (1...batch).map { [UInt8($0)] } + [[200]])
        let slept = try #require(asleep.withLock { $0 }, "the receive slept")
        #expect(slept.cpu == (mayRunThere && batch >= TSC_POLL_JOIN_BATCH ? 0 : 1))
        let allowed = mayRunThere ? "0-1" : "1"
        #expect(slept.allowed == allowed, "its affinity put back before it slept")
        #expect(result.allowedAfter == allowed)
    }

    /// A datagram too large for the ring comes on the channel: a wait that
    /// polls the ring sees it come (the service counts it in the region),
    /// rather than find it only once the second of polling is over.
    @Test func aBusyPollingWaitSeesADatagramThatCameOnTheChannel() throws {
        let served = try ServedHost()
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }  // asks for the region
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [1]))
        #expect(try socket.receive(timeout: .seconds(5)).payload == [1])
        socket.busyPollMicroseconds = 1_000_000

        let largest = (0..<65507).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let packet = FrameBuilder.ipv4(proto: .udp, payload: FrameBuilder.udp(sourcePort: 35789, destinationPort: 7, payload: largest),
                                       identification: 0x5151)
        let waiting = Event()  // the receive is about to wait
        let injectorTimedOut = Atomic<Bool>(false)
        let link = served.link
        let injector = JoinableThread(name: "injector") {
            injectorTimedOut.store(!waiting.wait(timeoutMilliseconds: 5000), ordering: .releasing)
            for fragment in FrameBuilder.fragments(of: packet, size: 1480) { link.inject(fragment) }
        }
        let started = ContinuousClock.now
        waiting.signal()
        let datagram = try socket.receive(timeout: .seconds(5))
        let waited = ContinuousClock.now - started
        injector.join()
        let timedOut = injectorTimedOut.load(ordering: .acquiring)
        #expect(!timedOut, "the injector's deadline passed before the wait began")
        #expect(datagram.payload == largest)
        #expect(waited < .milliseconds(500))
    }

    /// A client whose receive busy-polls (on another CPU than the stack's
    /// executor) answers what the executor delivers at once: the executor
    /// waits for the answer instead of sleeping (and being woken by the
    /// client's doorbell for it). A client that stops answering (it only
    /// receives) is waited for twice more, and again once it answers; one
    /// that does not poll is never waited for.
    @Test func theStackAwaitsABusyPollingClientsAnswer() throws {
        try #require(sysconf(Int32(_SC_NPROCESSORS_ONLN)) >= 2, "the client and the executor on CPUs of their own")
        let served = try ServedHost(executorCPUs: [0])
        served.learnPeer()
        let counters = served.service.counters
        let failures = Mutex<[String]>([])
        let waitsAfter = Mutex<[Int]>([])
        let link = served.link, path = served.path
        let client = JoinableThread(name: "client") {
            var cpu: Int32 = 1
            _ = csys_pin_thread(&cpu, 1)
            func fail(_ text: String) { failures.withLock { $0.append(text) } }
            do {
                let socket = try TapstackClient.UDPSocket(servicePath: path)
                try socket.bind(port: 7)
                socket.busyPollMicroseconds = 0  // not the adaptive default: sleeps at once
                _ = try? socket.receive()  // asks for the region
                var sequence: UInt32 = 0
                /// One datagram from the peer, received; answered when `answer`.
                func round(answer: Bool) throws {
                    sequence += 1
                    let payload = Self.numbered(sequence, size: 32)
                    link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: payload))
                    let datagram = try socket.receive(timeout: .seconds(5))
                    if datagram.payload != payload { fail("datagram \(sequence) came as \(datagram.payload)") }
                    guard answer else { return }
                    try socket.send(payload, to: peer)
                    guard let frame = link.nextTransmitted(timeoutMilliseconds: 5000), Array(frame[42..<74]) == payload else {
                        return fail("answer \(sequence) did not leave")
                    }
                }
                func waits() -> Int { Int(counters.answerWaits.load(ordering: .relaxed)) }
                for _ in 0..<20 { try round(answer: true) }  // not polling
                waitsAfter.withLock { $0.append(waits()) }
                socket.busyPollMicroseconds = 1_000_000
                for _ in 0..<50 { try round(answer: true) }
                waitsAfter.withLock { $0.append(waits()) }
                for _ in 0..<20 { try round(answer: false) }
                waitsAfter.withLock { $0.append(waits()) }
                for _ in 0..<20 { try round(answer: true) }
                waitsAfter.withLock { $0.append(waits()) }
            } catch {
                fail("\(error)")
            }
        }
        client.join()
        let failed = failures.withLock { $0 }
        #expect(failed.isEmpty)
        let waits = waitsAfter.withLock { $0 }
        try #require(waits.count == 4)
        #expect(waits[0] == 0, "a client that does not poll is not waited for")
        #expect(waits[1] - waits[0] >= 25, "one that polls is")
        let inTime = counters.answersInTime.load(ordering: .relaxed)
        #expect(inTime > 0)
        #expect((1...2).contains(waits[2] - waits[1]), "waited for twice at most once it stopped answering")
        #expect(waits[3] - waits[2] >= 10, "waited for again once it answers")
    }

    /// A socket of the stack's own on `port` whose readiness work (run on
    /// the executor after the work queued before it in the same turn) pops
    /// the client's ring at the end of the turn: what it took.
    static func takeFromRingAtEndOfTurn(_ host: NetworkHost, ring region: UnsafeMutableRawPointer,
                                        port: UInt16) throws -> TakenRecord {
        let local = Sockets.UDPSocket(host: host)
        try local.bind(port: port)
        let taken = TakenRecord()
        let clientRing = SharedPointer(value: tsr_region_to_client(region, TSR_REGION_CAPACITY)!)
        _ = local.addReadinessCallback(.readable) { _ in
            host.execute {
                _ = try? local.receive()
                host.executeAtEndOfTurn {
                    var ring = tsr_end()
                    guard tsr_attach(&ring, clientRing.value, TSR_REGION_CAPACITY, 0) == 0 else { return }
                    var record = [UInt8](repeating: 0, count: 2048)
                    let length = record.withUnsafeMutableBytes { tsr_pop(&ring, $0.baseAddress, $0.count, 0) }
                    taken.keep(Array(record.prefix(max(length, 0))))
                }
            }
        }
        return taken
    }

    /// Until the service finds the client reading its ring, it delivers
    /// there itself: datagrams to port 7, each received, until the executor
    /// does; then the executor is let go idle.
    static func warmUpUntilTheExecutorDelivers(_ served: ServedHost, _ client: inout tsc_socket) throws {
        var buffer = [UInt8](repeating: 0, count: 2048)
        var descriptor = pollfd(fd: client.data_fd, events: Int16(POLLIN), revents: 0)
        let counters = served.service.counters
        for round in 0..<50 where counters.regionDirect.load(ordering: .relaxed) == 0 {
            #expect(served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [UInt8(round)])))
            #expect(poll(&descriptor, 1, 5000) == 1)
            var address = tsp_address(), port: UInt16 = 0, truncated: Int32 = 0
            var part = iovec(iov_base: buffer.withUnsafeMutableBytes { $0.baseAddress }, iov_len: buffer.count)
            #expect(tsc_recvv(&client, &part, 1, &address, &port, Int32(MSG_DONTWAIT), &truncated) == 1)
        }
        try #require(counters.regionDirect.load(ordering: .relaxed) > 0)
        #expect(served.host.waitUntilIdle())
    }

    /// The same for a TapstackClient socket bound to port 7: it asks for its
    /// region, and the first datagrams after that may come on the channel
    /// (from the service thread); then the executor puts them in the ring
    /// itself, noting its CPU there.
    static func warmUpUntilTheExecutorDelivers(_ served: ServedHost, _ socket: TapstackClient.UDPSocket) throws {
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }  // asks for the region
        let counters = served.service.counters
        for _ in 0..<100 where counters.regionDirect.load(ordering: .relaxed) == 0 {
            served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: 7, payload: [1]))
            #expect(try socket.receive(timeout: .seconds(5)).payload == [1])
        }
        try #require(counters.regionDirect.load(ordering: .relaxed) > 0, "the executor put a datagram in the ring")
    }

    /// A stack whose executor is pinned to CPU 0, and a TapstackClient
    /// socket on port 7 whose receives poll adaptively (the default), warmed
    /// up until the executor delivers to its ring (noting its CPU there).
    static func adaptiveReceiverBesideAnExecutorOnCPU0() throws -> (ServedHost, TapstackClient.UDPSocket) {
        try #require(sysconf(Int32(_SC_NPROCESSORS_ONLN)) >= 2, "the executor and the receiver on CPUs of their own")
        let served = try ServedHost(executorCPUs: [0])
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        #expect(socket.busyPollMicroseconds == 0)  // no $TAPSTACK_BUSY_POLL in tests: adaptive
        #expect(socket.busyPollsAdaptively)
        try warmUpUntilTheExecutorDelivers(served, socket)
        return (served, socket)
    }

    /// Holds the executor in a turn (so that frames injected meanwhile come
    /// in one batch) until the returned closure is called.
    static func holdTheExecutor(_ host: NetworkHost) -> () -> Void {
        let held = Atomic<Bool>(false)
        let release = SharedFlag()
        host.withStack { _ in
            host.execute {
                held.store(true, ordering: .sequentiallyConsistent)
                for _ in 0..<5_000_000 where !release.isSet { sched_yield() }
            }
        }
        host.link.wake()
        #expect(eventually { held.load(ordering: .sequentiallyConsistent) })
        return { release.set() }
    }

    /// The calling thread's voluntary context switches: the times it slept.
    static func voluntarySwitches() -> Int {
        var usage = rusage()
        getrusage(1 /* RUSAGE_THREAD */, &usage)
        return usage.ru_nvcsw
    }

    /// Whether thread `id` of this process is asleep (state S in its stat).
    static func isSleeping(thread id: Int32) -> Bool {
        scheduling(ofThread: id)?.state == "S"
    }

    /// Thread `id`'s state and the CPU it last ran on (fields 3 and 39 of
    /// its stat).
    static func scheduling(ofThread id: Int32) -> (state: Character, cpu: Int)? {
        guard let text = Self.procFile("/proc/self/task/\(id)/stat"),
              let close = text.lastIndex(of: ")") else { return nil }
        // "pid (comm) S ...": the fields after the last ')' begin with the third.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 36, let state = fields[0].first, let cpu = Int(fields[36]) else { return nil }
        return (state, cpu)
    }

    /// The CPUs thread `id` of this process may run on, as its status lists them ("0-1").
    static func allowedCPUs(ofThread id: Int32) -> String? {
        Self.procFile("/proc/self/task/\(id)/status")?.split(separator: "\n")
            .first { $0.hasPrefix("Cpus_allowed_list:") }
            .map { String($0.dropFirst("Cpus_allowed_list:".count).filter { !$0.isWhitespace }) }
    }

    static func procFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var text = [UInt8](), chunk = [UInt8](repeating: 0, count: 4096)
        while case let count = fread(&chunk, 1, chunk.count, file), count > 0 { text += chunk.prefix(count) }
        return String(decoding: text, as: UTF8.self)
    }
}

/// The record the executor's work took from a ring.
final class TakenRecord: Sendable {
    private let value = Mutex<[UInt8]>([])
    var bytes: [UInt8] { value.withLock { $0 } }
    func keep(_ record: [UInt8]) { value.withLock { $0 = record } }
}

/// A flag one thread raises and another watches.
private final class SharedFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
}

/// A pointer into shared memory handed to the executor's work.
private struct SharedPointer: @unchecked Sendable {
    let value: UnsafeMutableRawPointer
}
