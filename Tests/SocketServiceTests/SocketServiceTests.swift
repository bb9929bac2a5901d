import Glibc
import Link
import SocketService
import Sockets
import Stack
import CTapstackChannel
import TapstackProtocol
@testable import TapstackClient
import Synchronization
import Testing
import TestSupport
import Wire

/// A stack over a memory link (the test plays the wire) serving its sockets
/// at a fresh path; clients are `TapstackClient.UDPSocket`s in this process,
/// which talk to it exactly as another process would.
final class ServedHost {
    let link: MemoryLink
    let host: NetworkHost
    let service: SocketService
    let path: String
    private var stopped = false

    /// - Parameter watchesDescriptors: false plays a link that cannot watch
    ///   the clients' doorbells (they ring on the channel then).
    /// - Parameter executorCPUs: pins the stack's executor (none: it runs anywhere).
    init(maximumSockets: Int = 1024, watchesDescriptors: Bool = true, executorCPUs: [Int] = []) throws {
        link = MemoryLink(capacity: 256, watchesDescriptors: watchesDescriptors)
        host = try! NetworkHost(configuration: .standard, link: link, options: ExecutorOptions(cpus: executorCPUs))
        host.start()
        _ = link.nextTransmitted()  // the gratuitous ARP
        path = "/tmp/tapstack-svc-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        service = try SocketService(host: host, path: path, maximumSockets: maximumSockets)
        service.start()
    }

    func stop() {
        guard !stopped else { return }
        stopped = true
        service.stop()
        host.stop()
    }

    deinit { stop() }

    /// Teaches the stack the peer's MAC and swallows the ARP reply.
    func learnPeer() {
        link.inject(FrameBuilder.arp(.request))
        _ = link.nextTransmitted()
    }

    /// Waits until the service has `count` sockets open (it releases them on its own thread).
    func waitForOpenSockets(_ count: Int) -> Bool {
        for _ in 0..<200 where service.openSockets != count { usleep(5_000) }
        return service.openSockets == count
    }
}

let peer = SocketAddress(IPv4Address(192, 0, 2, 1), 35789)

@Suite(.serialized) struct SocketServiceTests {
    @Test func aDatagramForTheClientsPortReachesItWithItsSource() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        #expect(throws: SocketError.wouldBlock) { try socket.receive() }
        served.link.inject(Captured.udpRequest)
        let datagram = try socket.receive(timeout: .seconds(5))
        #expect(datagram.payload == Array("hello\n".utf8))
        #expect(datagram.source == peer)
    }

    @Test func whatTheClientSendsLeavesOnTheLinkByteForByte() throws {
        let served = try ServedHost()
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        #expect(try socket.send(Array("hello\n".utf8), to: peer) == 6)
        let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
        // UDP header (ports, length, checksum) and payload as the captured reply.
        #expect(Array(frame[34..<48]) == Array(Captured.udpReply[34..<48]))
        #expect(Array(frame[26..<34]) == Array(Captured.udpReply[26..<34]))  // IP source and destination
    }

    @Test func connectedSocketSendsToItsPeerAndNamesBothEnds() throws {
        let served = try ServedHost()
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        #expect(socket.localAddress == nil)
        #expect(socket.remoteAddress == nil)
        #expect(throws: SocketError.notConnected) { try socket.send([1]) }
        try socket.bind(port: 7)
        try socket.connect(to: peer)
        // Connected, the wildcard-bound socket names the address it sends from (getsockname on Linux).
        #expect(socket.localAddress == SocketAddress(FrameBuilder.stackIP, 7))
        #expect(socket.remoteAddress == peer)
        try socket.send(Array("hello\n".utf8))
        let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
        #expect(Array(frame[34..<48]) == Array(Captured.udpReply[34..<48]))
        socket.disconnect()
        #expect(socket.remoteAddress == nil)
    }

    @Test func addressErrorsAreReportedOnTheCall() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        #expect(throws: SocketError.networkUnreachable) { try socket.send([1], to: SocketAddress(IPv4Address(10, 0, 0, 1), 9)) }
        #expect(throws: SocketError.networkUnreachable) { try socket.send([1], to: SocketAddress(IPv4Address(127, 0, 0, 1), 9)) }
        #expect(throws: SocketError.messageTooLong) { try socket.send([UInt8](repeating: 0, count: 65508), to: peer) }
        #expect(throws: SocketError.invalidArgument) { try socket.send([1], to: SocketAddress(IPv4Address(192, 0, 2, 1), 0)) }
        let broadcast = SocketAddress(IPv4Address(192, 0, 2, 255), 9)
        #expect(throws: SocketError.permissionDenied) { try socket.send([1], to: broadcast) }
        socket.allowsBroadcast = true
        #expect(socket.allowsBroadcast)
        #expect(try socket.send([1], to: broadcast) == 1)
        let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
        #expect(Array(frame[0..<6]) == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        socket.dontFragment = true
        #expect(throws: SocketError.messageTooLong) { try socket.send([UInt8](repeating: 0, count: 1473), to: peer) }
    }

    @Test func portsAreSharedWithInProcessSocketsAndFreedOnClose() throws {
        let served = try ServedHost()
        let local = Sockets.UDPSocket(host: served.host)
        try local.bind(port: 9000)
        let remote = try TapstackClient.UDPSocket(servicePath: served.path)
        #expect(throws: SocketError.addressInUse) { try remote.bind(port: 9000) }
        try remote.bind(port: 9001)
        #expect(served.service.openSockets == 1)
        remote.close()
        #expect(served.waitForOpenSockets(0))
        let again = Sockets.UDPSocket(host: served.host)
        try again.bind(port: 9001)
    }

    @Test func optionsRoundTrip() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        socket.reuseAddress = true
        #expect(socket.reuseAddress)
        socket.receiveBufferSize = 8192
        #expect(socket.receiveBufferSize == 8192)
        socket.receiveBufferSize = 1
        #expect(socket.receiveBufferSize == UDPEndpoint.receiveBufferLimits.lowerBound)
        #expect(socket.takeError() == nil)
    }

    @Test func asyncReceiveSuspendsUntilADatagramArrives() async throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        let link = served.link
        let suspended = Atomic<Bool>(false)
        let injector = JoinableThread(name: "injector") {
            // The datagram comes only once the task is suspended on the socket.
            let deadline = Deadline(.seconds(5))
            while Reactor.shared.waitingCount == 0 && !deadline.hasPassed { usleep(200) }
            suspended.store(Reactor.shared.waitingCount > 0, ordering: .relaxed)
            link.inject(Captured.udpRequest)
        }
        let datagram = try await socket.receiveNext()
        injector.join()
        let taskWasSuspended = suspended.load(ordering: .relaxed)
        #expect(taskWasSuspended)
        #expect(datagram.payload == Array("hello\n".utf8))
    }

    @Test func aStoppedServiceFailsCallsInsteadOfHanging() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        served.stop()
        #expect(access(served.path, F_OK) != 0)
        #expect(throws: SocketError.serviceUnavailable) { try socket.receive(timeout: .seconds(2)) }
        #expect(throws: SocketError.serviceUnavailable) { try TapstackClient.UDPSocket(servicePath: served.path) }
    }

    @Test func socketsBeyondTheBoundAreRefused() throws {
        let served = try ServedHost(maximumSockets: 2)
        let first = try TapstackClient.UDPSocket(servicePath: served.path)
        let second = try TapstackClient.UDPSocket(servicePath: served.path)
        #expect(throws: SocketError.noPortsAvailable) { try TapstackClient.UDPSocket(servicePath: served.path) }
        #expect(served.service.counters.refusedTooMany.load(ordering: .relaxed) == 1)
        first.close()
        #expect(served.waitForOpenSockets(1))
        _ = try TapstackClient.UDPSocket(servicePath: served.path)
        _ = second
    }

    @Test func aPathInUseOrNotASocketIsRefusedWithAReason() throws {
        let served = try ServedHost()
        #expect(throws: ServiceError.inUse(path: served.path)) {
            _ = try SocketService(host: served.host, path: served.path)
        }
        let file = served.path + ".file"
        close(open(file, O_CREAT | O_WRONLY, 0o600))
        defer { unlink(file) }
        #expect(throws: ServiceError.notASocket(path: file)) {
            _ = try SocketService(host: served.host, path: file)
        }
    }

    @Test func aClientThatStopsReadingLosesNothingUncounted() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        // The client reads nothing while 3000 datagrams arrive: its channel
        // fills, then the stack's queue, then the stack drops and counts.
        var injected = 0
        while injected < 3000 {
            if served.link.inject(Captured.udpRequest) { injected += 1 } else { usleep(1000) }
        }
        for _ in 0..<500 {
            let counters = served.host.counters
            if counters[.udpRxDelivered] + counters[.udpDropQueueFull] == 3000 { break }
            usleep(10_000)
        }
        var received: UInt64 = 0
        while (try? socket.receive(timeout: .milliseconds(500))) != nil { received += 1 }
        let counters = served.host.counters
        #expect(counters[.udpRxDelivered] + counters[.udpDropQueueFull] == 3000)
        #expect(counters[.udpDropQueueFull] > 0)
        // Every datagram the stack queued reached the client.
        #expect(received == counters[.udpRxDelivered])
    }
}

extension SocketServiceTests {
    /// Issue 14 item 4: datagrams the service took from the stack for a
    /// client that no longer reads its channel were dropped uncounted.
    @Test func datagramsForAClientThatStoppedReadingAreCounted() throws {
        let served = try ServedHost()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.bind(port: 7)
        // The client's channel refuses everything from now on (EPIPE on the service's side).
        #expect(shutdown(socket.fileDescriptor, Int32(SHUT_RD)) == 0)
        let count: UInt64 = 50
        var injected: UInt64 = 0
        while injected < count {
            if served.link.inject(Captured.udpRequest) { injected += 1 } else { usleep(1000) }
        }
        let service = served.service.counters
        func accounted() -> UInt64 {
            service.datagramsReceived.load(ordering: .relaxed) + service.droppedClientGone.load(ordering: .relaxed)
                + served.host.counters[.udpDropQueueFull]
        }
        for _ in 0..<500 where accounted() < count { usleep(10_000) }
        #expect(served.host.counters[.udpRxDelivered] + served.host.counters[.udpDropQueueFull] == count)
        #expect(service.datagramsReceived.load(ordering: .relaxed) == 0)
        #expect(service.droppedClientGone.load(ordering: .relaxed) == served.host.counters[.udpRxDelivered])
        #expect(accounted() == count)
    }
}

/// A client that does not follow the protocol gets errors and counted drops, never a crash.
@Suite(.serialized) struct HostileClientTests {
    /// A raw control connection to the service.
    static func connectRaw(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(connected == 0)
        return fd
    }

    static func call(_ fd: Int32, _ bytes: [UInt8]) -> tsp_reply? {
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var reply = tsp_reply()
        let n = withUnsafeMutableBytes(of: &reply) { recv(fd, $0.baseAddress, $0.count, 0) }
        return n == MemoryLayout<tsp_reply>.size ? reply : nil
    }

    @Test func malformedRequestsGetAnErrorAndTheConnectionStaysUsable() throws {
        let served = try ServedHost()
        let fd = try Self.connectRaw(served.path)
        defer { close(fd) }
        // Too short, wrong version, unknown operation, an operation before open.
        #expect(Self.call(fd, [1, 2, 3])?.error == EPROTO)
        var request = tsp_request()
        request.version = 99
        request.op = UInt16(TSP_OPEN.rawValue)
        #expect(Self.call(fd, withUnsafeBytes(of: request) { Array($0) })?.error == EPROTO)
        request.version = UInt16(TSP_VERSION)
        request.op = UInt16(TSP_BIND.rawValue)
        #expect(Self.call(fd, withUnsafeBytes(of: request) { Array($0) })?.error == EBADF)
        request.op = 200
        #expect(Self.call(fd, withUnsafeBytes(of: request) { Array($0) })?.error == EBADF)
        #expect(served.service.counters.badRequests.load(ordering: .relaxed) == 2)
        // A proper open still works on the same connection. This client does
        // not take the data channel passed with the reply, so the kernel
        // closes it, and the service frees the socket again.
        request.op = UInt16(TSP_OPEN.rawValue)
        #expect(Self.call(fd, withUnsafeBytes(of: request) { Array($0) })?.error == 0)
        #expect(served.service.counters.socketsOpened.load(ordering: .relaxed) == 1)
        #expect(served.waitForOpenSockets(0))
        #expect(served.service.counters.socketsReleased.load(ordering: .relaxed) == 1)
    }

    @Test func aServiceThatDoesNotAnswerFailsTheOpenInsteadOfHanging() throws {
        let link = MemoryLink(capacity: 16)
        let host = try! NetworkHost(configuration: .standard, link: link)
        let path = "/tmp/tapstack-svc-test-\(getpid())-mute.sock"
        // Listening, but its thread never started: nobody answers.
        let service = try SocketService(host: host, path: path)
        defer { service.stop() }
        let start = ContinuousClock.now
        #expect(throws: (any Error).self) { try TapstackClient.UDPSocket(servicePath: path) }
        let waited = ContinuousClock.now - start
        #expect(waited >= .seconds(4) && waited < .seconds(15))
    }

    @Test func malformedDatagramsAreDroppedAndCounted() throws {
        let served = try ServedHost()
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        // A framed message of an unknown kind: dropped, counted.
        var header = tsp_datagram_header()
        header.magic = TSP_MAGIC
        header.kind = 7
        _ = withUnsafeBytes(of: header) { send(socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
        // A bare message (no magic) on a socket without a peer has nowhere to go: refused, counted.
        _ = [UInt8](repeating: 0, count: 3).withUnsafeBytes { send(socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
        // A good one after them still goes out.
        try socket.send(Array("hello\n".utf8), to: peer)
        let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
        #expect(Array(frame[42..<48]) == Array("hello\n".utf8))
        // The refusal reaches the client after the service counted it.
        #expect(throws: SocketError.notConnected) { try socket.receive(timeout: .seconds(5)) }
        #expect(served.service.counters.badDatagrams.load(ordering: .relaxed) == 1)
        #expect(served.service.counters.sendErrors.load(ordering: .relaxed) == 1)
    }

    /// What libuv does (dig, node): connect, then sendmmsg and recvmmsg as raw
    /// system calls the preload shim never sees, so no header on either side.
    @Test func aConnectedSocketCarriesBarePayloadsBothWays() throws {
        let served = try ServedHost()
        served.learnPeer()
        let socket = try TapstackClient.UDPSocket(servicePath: served.path)
        try socket.connect(to: peer)
        let query: [UInt8] = [0xba, 0x51, 0x01, 0x20, 0, 1, 0, 0]  // a DNS header's first bytes
        #expect(query.withUnsafeBytes { send(socket.fileDescriptor, $0.baseAddress, $0.count, 0) } == query.count)
        let frame = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
        #expect(Array(frame[30..<34]) == [192, 0, 2, 1] && Array(frame[36..<38]) == [0x8b, 0xcd])  // to 192.0.2.1:35789
        #expect(Array(frame[38..<40]) == [0, 16] && Array(frame[42..<50]) == query)  // UDP length 8 + 8

        // From the peer: bare on the channel, as recvmmsg expects...
        let port = socket.localAddress!.port
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: port, payload: [1, 2, 3, 4, 5]))
        var buffer = [UInt8](repeating: 0, count: 64)
        var pollDescriptor = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
        #expect(poll(&pollDescriptor, 1, 5000) == 1)
        let n = buffer.withUnsafeMutableBytes { recv(socket.fileDescriptor, $0.baseAddress, $0.count, 0) }
        #expect(Array(buffer[0..<max(n, 0)]) == [1, 2, 3, 4, 5])
        // ...and the client library still gives payload and source; a payload
        // that begins with the magic itself stays framed, and intact.
        var magic = TSP_MAGIC
        let tricky = withUnsafeBytes(of: &magic) { Array($0) } + [9, 9]
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: port, payload: [7, 7]))
        served.link.inject(FrameBuilder.udpFrame(sourcePort: 35789, destinationPort: port, payload: tricky))
        let first = try socket.receive(timeout: .seconds(5))
        #expect(first.payload == [7, 7] && first.source == peer)
        let second = try socket.receive(timeout: .seconds(5))
        #expect(second.payload == tricky && second.source == peer)
    }

    /// dig's exact calls (strace of dig 9.18 under exec): SO_REUSEADDR on
    /// then off, IP_MTU_DISCOVER, bind 0.0.0.0:0, connect to the server,
    /// one sendmmsg. In process first, then through the service with the
    /// shim's C calls and the raw sendmmsg libuv makes; both put the query
    /// on the wire from the stack's address.
    @Test func digsCallSequenceSendsTheQueryInProcessAndThroughTheService() throws {
        let served = try ServedHost()
        served.learnPeer()
        let query: [UInt8] = [0x12, 0x34, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1]
        let server = SocketAddress(IPv4Address(192, 0, 2, 1), 53)

        let local = Sockets.UDPSocket(host: served.host)
        local.reuseAddress = true
        local.reuseAddress = false
        local.dontFragment = false
        try local.bind(address: .any, port: 0)
        try local.connect(to: server)
        _ = try local.send(query)  // connected: no destination, as sendmmsg on a connected socket
        let inProcess = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
        #expect(Array(inProcess[26..<30]) == [192, 0, 2, 2] && Array(inProcess[36..<38]) == [0, 53])
        #expect(Array(inProcess[42..<54]) == query)

        var client = tsc_socket()
        #expect(tsc_open(&client, served.path, AF_INET, 0) == 0)
        defer { tsc_close(&client) }
        #expect(tsc_setopt(&client, Int32(TSP_OPT_REUSEADDR.rawValue), 1) == 0)
        #expect(tsc_setopt(&client, Int32(TSP_OPT_REUSEADDR.rawValue), 0) == 0)
        #expect(tsc_setopt(&client, Int32(TSP_OPT_DONTFRAG.rawValue), 0) == 0)
        var any = tsp_address(IPv4Address.any), dnsServer = tsp_address(IPv4Address(192, 0, 2, 1))
        #expect(tsc_bind(&client, &any, 0) == 0)
        #expect(tsc_connect(&client, &dnsServer, 53) == 0)
        // One sendmmsg of the bare query, as libuv makes it (tsv_batch_send is sendmmsg(2)).
        let batch = try #require(tsv_batch_create(1, 512))
        defer { tsv_batch_destroy(batch) }
        query.withUnsafeBytes { tsv_batch_slot(batch, 0)!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        tsv_batch_set_length(batch, 0, UInt32(query.count))
        let sent = tsv_batch_send(client.data_fd, batch, 0, 1)
        #expect(sent == 1)
        let throughService = try #require(served.link.nextTransmitted(timeoutMilliseconds: 5000))
        #expect(Array(throughService[26..<30]) == [192, 0, 2, 2] && Array(throughService[36..<38]) == [0, 53])
        #expect(Array(throughService[42..<54]) == query)
        #expect(served.service.counters.sendErrors.load(ordering: .relaxed) == 0)
    }
}
