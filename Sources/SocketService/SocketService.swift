import CTapstackChannel
import FoundationEssentials
import Glibc
import Host
import SocketAPI
import Sockets
import Stack
import Synchronization
import Wire

/// Serves the stack's UDP sockets to other processes over a Unix-domain
/// socket (see `tapstack_channel.h` for the protocol).
///
/// Each client socket is a stack `UDPSocket` plus two kernel sockets: a
/// control connection (one request, one reply: open, bind, connect, options,
/// names) and a SOCK_SEQPACKET data channel on which every datagram crosses
/// as one message. The kernel buffers of the data channel give backpressure
/// and readiness in both directions: the service stops reading a client's
/// channel while the link is full, and stops draining the stack socket while
/// the client's channel is full (then the stack's receive queue bound and its
/// drop counter apply, as with an unread socket).
///
/// One service thread owns every connection and sleeps in epoll when idle.
/// Stack readiness callbacks only raise a flag and wake it. (Running the
/// stack-to-client half on the stack thread instead, as the in-process echo
/// does, was measured: better ping-pong latency, ~20 % less throughput with
/// many datagrams in flight on two cores; throughput won.)
public final class SocketService: @unchecked Sendable {
    /// Where clients connect.
    public let path: String
    public let host: NetworkHost
    /// Connections (and so sockets) served at once; more are refused.
    public let maximumSockets: Int
    public let counters = ServiceCounters()
    /// Every counter `tapstack stats` reports: the stack's, and whatever the
    /// process adds (link, device, capture); the service's own follow.
    private let counterSource: @Sendable () -> [(name: String, value: UInt64)]

    /// The device's name and kernel index, told to clients on open.
    private let interfaceName: String
    private let interfaceIndex: Int32
    private let listenFD: Int32
    private let epollFD: Int32
    private let news = News()
    private let stopping = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)
    // Service thread only (and `init`/`stop` before and after it runs).
    private var clients: [UInt64: RemoteSocket] = [:]
    private var nextID: UInt64 = 1
    /// False while accepting is paused for want of descriptors.
    private var listening = true
    private let fromClients: OpaquePointer
    private let toClients: OpaquePointer
    private var thread: JoinableThread?

    private static let batchCount: UInt32 = 16
    private static let slotSize = 65536
    private static let headerSize = MemoryLayout<tsp_datagram_header>.size
    private static let listenTag: UInt64 = 0
    private static let wakeupTag: UInt64 = 3
    private static func tag(_ id: UInt64, data: Bool) -> UInt64 { id << 2 | (data ? 2 : 1) }

    /// Listens at `path` (mode 0660), making its directory if missing and
    /// replacing a stale socket nobody serves.
    /// - Throws: `ServiceError` explaining in one line why it cannot serve there.
    /// - Parameter counterSource: the counters `tapstack stats` reports before
    ///   the service's own; the stack's by default.
    /// - Parameter interfaceName: the device the stack runs on, which
    ///   clients name in SO_BINDTODEVICE and find by index in IP_PKTINFO.
    public init(host: NetworkHost, path: String, maximumSockets: Int = 1024, interfaceName: String? = nil,
                counterSource: (@Sendable () -> [(name: String, value: UInt64)])? = nil) throws(ServiceError) {
        self.host = host
        self.interfaceName = interfaceName.map { String($0.utf8.prefix(15))! } ?? ""
        self.interfaceIndex = interfaceName.map { Int32(bitPattern: if_nametoindex($0)) } ?? 0
        self.counterSource = counterSource ?? { host.counters.all.map { (name: $0.counter.name, value: $0.value) } }
        self.path = path
        self.maximumSockets = maximumSockets
        try Self.prepare(path)
        Self.raiseDescriptorLimit()
        listenFD = tsv_listen(path, 0o660)
        guard listenFD >= 0 else { throw .systemError(operation: "listen on \(path)", errno: errno) }
        epollFD = tsv_epoll_create()
        fromClients = tsv_batch_create(Self.batchCount, UInt32(Self.slotSize))!
        toClients = tsv_batch_create(Self.batchCount, UInt32(Self.slotSize))!
        _ = tsv_epoll_set(epollFD, 1, listenFD, UInt32(TSV_IN), Self.listenTag)
        _ = tsv_epoll_set(epollFD, 1, news.wakeup.fd, UInt32(TSV_IN), Self.wakeupTag)
    }

    /// Each client socket holds two descriptors here: raise the soft limit
    /// (1024 by default) to the hard one so that `maximumSockets` can be reached.
    private static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// Makes the directory and clears a stale socket file.
    private static func prepare(_ path: String) throws(ServiceError) {
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            let directory = String(path[..<slash])
            if mkdir(directory, 0o755) != 0 && errno != EEXIST {
                throw .systemError(operation: "mkdir \(directory)", errno: errno)
            }
        }
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        guard status.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path: path) }
        var probe = tsc_socket()
        if tsc_open(&probe, path, 0) == 0 || errno != ECONNREFUSED {
            tsc_close(&probe)
            throw .inUse(path: path)
        }
        unlink(path)
    }

    /// Starts the service thread.
    public func start() {
        precondition(thread == nil)
        thread = JoinableThread(name: "tapstack-svc") { [self] in run() }
    }

    /// Stops the thread, releases every client's socket (their channels
    /// close, so blocked clients wake with an error) and removes the socket
    /// file. Calling it again does nothing.
    public func stop() {
        guard !stopped.exchange(true, ordering: .sequentiallyConsistent) else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        news.wakeup.forceSignal()
        thread?.join()
        thread = nil
        for client in Array(clients.values) { release(client) }
        close(listenFD)
        close(epollFD)
        unlink(path)
        tsv_batch_destroy(fromClients)
        tsv_batch_destroy(toClients)
    }

    /// Sockets open now (a snapshot, for tests and stats).
    public var openSockets: Int { openCount.load(ordering: .relaxed) }
    private let openCount = Atomic<Int>(0)

    // MARK: The service thread

    private func run() {
        let capacity = 64
        let tags = UnsafeMutablePointer<UInt64>.allocate(capacity: capacity)
        let events = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
        defer { tags.deallocate(); events.deallocate() }
        // Spinning before sleeping (as the driver and stack threads do) was
        // measured and did not pay here: the client's wake-ups dominate.
        var idle = false
        while !stopping.load(ordering: .relaxed) {
            // Sleep in epoll only when the last round found nothing; the
            // stack's news arrives through the wake-up's eventfd in the same set.
            var timeout: Int32 = 0
            if idle && news.wakeup.beginSleep(unless: {
                news.pending.load(ordering: .sequentiallyConsistent) || stopping.load(ordering: .relaxed)
            }) {
                timeout = -1
            }
            let count = Int(tsv_epoll_wait(epollFD, tags, events, Int32(capacity), timeout))
            if timeout == -1 { news.wakeup.endSleep() }
            for index in 0..<max(count, 0) where tags[index] != Self.wakeupTag {
                handle(tag: tags[index], events: events[index])
            }
            let hadNews = serveNews()
            idle = count <= 0 && !hadNews
        }
    }

    private func handle(tag: UInt64, events: UInt32) {
        if tag == Self.listenTag {
            acceptAll()
            return
        }
        guard let client = clients[tag >> 2] else { return }
        if tag & 3 == 1 {
            serveControl(client, events: events)
        } else {
            if events & UInt32(TSV_OUT) != 0 { flushToClient(client) }
            // Hung up while its datagrams wait for the link (the channel is
            // not being read then): the client is gone, release it now.
            if events & UInt32(TSV_HUP) != 0 && client.dataInterest & UInt32(TSV_IN) == 0 {
                release(client)
            } else if events & UInt32(TSV_IN | TSV_HUP) != 0, clients[client.id] != nil {
                readFromClient(client)
            }
        }
    }

    private func acceptAll() {
        while true {
            let fd = tsv_accept(listenFD)
            guard fd >= 0 else {
                if errno == EMFILE || errno == ENFILE {
                    // Out of descriptors: stop listening (a level-triggered
                    // listener would spin) until a client leaves.
                    counters.refusedNoDescriptor.add(1, ordering: .relaxed)
                    setListening(false)
                }
                return
            }
            // Connections beyond the socket bound are kept only to tell them
            // so (EMFILE on their open); beyond that they are closed at once.
            guard clients.count < maximumSockets + 64 else {
                counters.refusedTooMany.add(1, ordering: .relaxed)
                close(fd)
                continue
            }
            let client = RemoteSocket(id: nextID, control: fd)
            nextID += 1
            _ = tsv_peer_credentials(fd, &client.pid, &client.uid)
            clients[client.id] = client
            _ = tsv_epoll_set(epollFD, 1, fd, UInt32(TSV_IN), Self.tag(client.id, data: false))
            counters.connections.add(1, ordering: .relaxed)
        }
    }

    private func setListening(_ on: Bool) {
        guard on != listening else { return }
        listening = on
        _ = tsv_epoll_set(epollFD, 2, listenFD, on ? UInt32(TSV_IN) : 0, Self.listenTag)
    }

    /// Lets every socket the stack flagged move its datagrams; true if any was flagged.
    private func serveNews() -> Bool {
        guard news.pending.exchange(false, ordering: .sequentiallyConsistent) else { return false }
        let ids = news.ids.withLock { ids in
            defer { ids.removeAll(keepingCapacity: true) }
            return ids
        }
        for id in ids {
            guard let client = clients[id] else { continue }
            client.flag.lower()
            if !client.waitingForStack.isEmpty { retryToStack(client) }
            if clients[id] != nil { flushToClient(client) }
        }
        return true
    }

    // MARK: Control requests

    private func serveControl(_ client: RemoteSocket, events: UInt32) {
        var request = tsp_request()
        for _ in 0..<64 {  // then let other clients have a turn (epoll reports the rest)
            request = tsp_request()
            let n = tsv_receive_request(client.control, &request)
            if n < 0 && errno == EAGAIN { return }
            if n <= 0 {
                // A client that sent and exited: what it sent is still in the
                // data channel; hand it to the stack before letting go.
                if n == 0, client.socket != nil, client.dataInterest & UInt32(TSV_IN) != 0 { readFromClient(client) }
                release(client)
                return
            }
            var reply = tsp_reply()
            reply.sequence = request.sequence  // lets the client skip replies to requests it gave up on
            var passed: Int32 = -1
            if n != MemoryLayout<tsp_request>.size || request.version != TSP_VERSION {
                counters.badRequests.add(1, ordering: .relaxed)
                reply.error = EPROTO
            } else {
                reply.error = perform(request, for: client, reply: &reply, passing: &passed)
            }
            let sent = tsv_send_reply(client.control, &reply, passed)
            if passed >= 0 { close(passed) }
            if sent < 0 {
                release(client)
                return
            }
        }
    }

    /// Carries out one request; returns 0 or an errno, filling `reply`.
    private func perform(_ request: tsp_request, for client: RemoteSocket, reply: inout tsp_reply,
                         passing passed: inout Int32) -> Int32 {
        if UInt32(request.op) == TSP_OPEN.rawValue {
            return open(client, nonblocking: request.value != 0, reply: &reply, passing: &passed)
        }
        if UInt32(request.op) == TSP_QUERY.rawValue {
            return answer(query: request.option, reply: &reply, passing: &passed)
        }
        guard let socket = client.socket else { return EBADF }
        let address = SocketAddress(IPv4Address(rawValue: UInt32(bigEndian: request.address)), request.port)
        do throws(SocketError) {
            switch UInt32(request.op) {
            case TSP_BIND.rawValue:
                try socket.bind(address: address.address, port: address.port)
            case TSP_CONNECT.rawValue:
                if request.address == 0 && request.port == 0 { socket.disconnect() } else { try socket.connect(to: address) }
            case TSP_SETOPT.rawValue:
                switch UInt32(bitPattern: request.option) {
                case TSP_OPT_BROADCAST.rawValue: socket.allowsBroadcast = request.value != 0
                case TSP_OPT_REUSEADDR.rawValue: socket.reuseAddress = request.value != 0
                case TSP_OPT_DONTFRAG.rawValue: socket.dontFragment = request.value != 0
                case TSP_OPT_RCVBUF.rawValue: socket.receiveBufferSize = Int(max(request.value, 0))
                case TSP_OPT_TTL.rawValue:
                    // Linux: -1 restores the default; 1 to 255 otherwise.
                    guard request.value == -1 || (1...255).contains(request.value) else { return EINVAL }
                    socket.timeToLive = request.value == -1 ? 64 : UInt8(request.value)
                case TSP_OPT_TOS.rawValue: socket.typeOfService = UInt8(truncatingIfNeeded: request.value)
                case TSP_OPT_MULTICAST_TTL.rawValue:
                    guard request.value == -1 || (0...255).contains(request.value) else { return EINVAL }
                    socket.multicastTimeToLive = request.value == -1 ? 1 : UInt8(request.value)
                case TSP_OPT_MULTICAST_LOOP.rawValue: socket.multicastLoop = request.value != 0
                case TSP_OPT_FREEBIND.rawValue: socket.freeBind = request.value != 0
                case TSP_OPT_WANT_INFO.rawValue: client.wantsInfo = request.value != 0
                case TSP_OPT_RECVERR.rawValue: socket.receivesErrors = request.value != 0
                case TSP_OPT_ADD_MEMBERSHIP.rawValue, TSP_OPT_ADD_SOURCE_MEMBERSHIP.rawValue,
                     TSP_OPT_DROP_MEMBERSHIP.rawValue, TSP_OPT_DROP_SOURCE_MEMBERSHIP.rawValue:
                    try changeMembership(of: socket, option: UInt32(bitPattern: request.option), request)
                default: return ENOPROTOOPT
                }
            case TSP_GETOPT.rawValue:
                switch UInt32(bitPattern: request.option) {
                case TSP_OPT_BROADCAST.rawValue: reply.value = socket.allowsBroadcast ? 1 : 0
                case TSP_OPT_REUSEADDR.rawValue: reply.value = socket.reuseAddress ? 1 : 0
                case TSP_OPT_DONTFRAG.rawValue: reply.value = socket.dontFragment ? 1 : 0
                case TSP_OPT_RCVBUF.rawValue: reply.value = Int32(socket.receiveBufferSize)
                case TSP_OPT_ERROR.rawValue: reply.value = socket.takeError()?.errno ?? 0
                case TSP_OPT_TTL.rawValue: reply.value = Int32(socket.timeToLive)
                case TSP_OPT_TOS.rawValue: reply.value = Int32(socket.typeOfService)
                case TSP_OPT_MULTICAST_TTL.rawValue: reply.value = Int32(socket.multicastTimeToLive)
                case TSP_OPT_MULTICAST_LOOP.rawValue: reply.value = socket.multicastLoop ? 1 : 0
                case TSP_OPT_FREEBIND.rawValue: reply.value = socket.freeBind ? 1 : 0
                case TSP_OPT_WANT_INFO.rawValue: reply.value = client.wantsInfo ? 1 : 0
                case TSP_OPT_RECVERR.rawValue: reply.value = socket.receivesErrors ? 1 : 0
                default: return ENOPROTOOPT
                }
            case TSP_NAMES.rawValue:
                break
            case TSP_ERRQUEUE.rawValue:
                guard let queued = socket.takeQueuedError() else { return EAGAIN }
                reply.value = queued.error.errno
                reply.remote_address = queued.destination.rawValue.bigEndian
                reply.remote_port = queued.destinationPort
                reply.queued.type = queued.type
                reply.queued.code = queued.code
                reply.queued.info = queued.info
                reply.queued.offender = queued.offender.rawValue.bigEndian
                let count = min(queued.payload.count, MemoryLayout.size(ofValue: reply.queued.data))
                withUnsafeMutableBytes(of: &reply.queued.data) { data in
                    for index in 0..<count { data[index] = queued.payload[index] }
                }
                reply.queued.length = UInt8(count)
                return 0
            default:
                counters.badRequests.add(1, ordering: .relaxed)
                return EOPNOTSUPP
            }
        } catch {
            return error.errno
        }
        fillNames(of: socket, into: &reply)
        return 0
    }

    private func changeMembership(of socket: UDPSocket, option: UInt32, _ request: tsp_request) throws(SocketError) {
        let group = IPv4Address(rawValue: UInt32(bigEndian: request.address))
        let sources: [IPv4Address]? = option == TSP_OPT_ADD_SOURCE_MEMBERSHIP.rawValue || option == TSP_OPT_DROP_SOURCE_MEMBERSHIP.rawValue
            ? [IPv4Address(rawValue: UInt32(bigEndian: request.source))] : nil
        if option == TSP_OPT_ADD_MEMBERSHIP.rawValue || option == TSP_OPT_ADD_SOURCE_MEMBERSHIP.rawValue {
            try socket.join(group: group, sources: sources)
        } else {
            try socket.leave(group: group, sources: sources)
        }
    }

    // MARK: Introspection

    /// Answers `tapstack ss` and `tapstack stats`: the JSON goes in a memfd
    /// passed with the reply, so an answer of any size never blocks this thread.
    private func answer(query: Int32, reply: inout tsp_reply, passing passed: inout Int32) -> Int32 {
        let json: [UInt8]
        do {
            switch UInt32(bitPattern: query) {
            case TSP_QUERY_SOCKETS.rawValue: json = Array(try IntrospectionFormat.encoder().encode(socketRecords()))
            case TSP_QUERY_COUNTERS.rawValue:
                let values = counterSource() + counters.snapshot.map { (name: $0.0, value: $0.1) }
                json = Array(try IntrospectionFormat.encoder().encode(Dictionary(values, uniquingKeysWith: { $1 })))
            default:
                counters.badRequests.add(1, ordering: .relaxed)
                return EINVAL
            }
        } catch {
            return EIO
        }
        let fd = json.withUnsafeBytes { tsv_memfd_with("tapstack-query", $0.baseAddress, $0.count) }
        guard fd >= 0 else { return errno }
        passed = fd
        reply.value = Int32(clamping: json.count)
        return 0
    }

    /// Every bound socket of the stack, each with the process holding it.
    /// Service thread only (it reads `clients`).
    private func socketRecords() -> [SocketRecord] {
        let ownProcess = SocketRecord.Owner(kind: "in-process", pid: getpid(), uid: getuid(), command: processName(getpid()))
        var records = host.withStack { stack in stack.udpSockets.map { SocketRecord($0, owner: ownProcess) } }
        var clientsByEndpoint: [Int: RemoteSocket] = [:]
        for client in clients.values { if let socket = client.socket { clientsByEndpoint[socket.endpointID] = client } }
        var names: [Int32: String] = [:]
        for index in records.indices {
            guard let client = clientsByEndpoint[records[index].id] else { continue }
            let command = names[client.pid] ?? processName(client.pid)
            names[client.pid] = command
            records[index].owner = .init(kind: "client", pid: client.pid, uid: client.uid, command: command)
        }
        return records
    }

    private func fillNames(of socket: UDPSocket, into reply: inout tsp_reply) {
        if let local = socket.localAddress {
            reply.local_address = local.address.rawValue.bigEndian
            reply.local_port = local.port
        }
        if let remote = socket.remoteAddress {
            reply.connected = 1
            reply.remote_address = remote.address.rawValue.bigEndian
            reply.remote_port = remote.port
        }
    }

    private func open(_ client: RemoteSocket, nonblocking: Bool, reply: inout tsp_reply, passing passed: inout Int32) -> Int32 {
        guard client.socket == nil else { return EINVAL }
        guard openCount.load(ordering: .relaxed) < maximumSockets else {
            counters.refusedTooMany.add(1, ordering: .relaxed)
            return EMFILE
        }
        var fds: (Int32, Int32) = (-1, -1)
        let made = withUnsafeMutablePointer(to: &fds) {
            $0.withMemoryRebound(to: Int32.self, capacity: 2) { tsv_socketpair($0, nonblocking ? 1 : 0) }
        }
        guard made == 0 else {
            let error = errno
            if error == EMFILE || error == ENFILE { counters.refusedNoDescriptor.add(1, ordering: .relaxed) }
            return error
        }
        let socket = UDPSocket(host: host)
        client.socket = socket
        client.data = fds.0
        client.dataInterest = UInt32(TSV_IN)
        _ = tsv_epoll_set(epollFD, 1, fds.0, client.dataInterest, Self.tag(client.id, data: true))
        let news = self.news, flag = client.flag, id = client.id
        client.callbackToken = socket.addReadinessCallback([.readable, .writable, .error]) { _ in
            if flag.raise() { news.post(id) }
        }
        passed = fds.1
        let configuration = host.configuration
        reply.interface.address = configuration.interface.address.rawValue.bigEndian
        reply.interface.netmask = configuration.interface.netmask.bigEndian
        reply.interface.gateway = configuration.gateway?.rawValue.bigEndian ?? 0
        reply.interface.mtu = UInt32(configuration.mtu)
        reply.interface.index = interfaceIndex
        withUnsafeMutableBytes(of: &reply.interface.name) { name in
            for (index, byte) in interfaceName.utf8.prefix(name.count - 1).enumerated() { name[index] = byte }
        }
        counters.socketsOpened.add(1, ordering: .relaxed)
        openCount.add(1, ordering: .relaxed)
        return 0
    }

    /// Closes the client's connections and its stack socket (port freed,
    /// queued datagrams dropped).
    private func release(_ client: RemoteSocket) {
        guard clients.removeValue(forKey: client.id) != nil else { return }
        if let socket = client.socket {
            if let token = client.callbackToken { socket.removeReadinessCallback(token) }
            socket.close()
            client.socket = nil
            counters.socketsReleased.add(1, ordering: .relaxed)
            openCount.add(-1, ordering: .relaxed)
            // What the link never took is lost with the socket: say so.
            counters.sendErrors.add(UInt64(client.waitingForStack.count), ordering: .relaxed)
            dropWaitingForClient(client)
        }
        _ = tsv_epoll_set(epollFD, 3, client.control, 0, 0)
        close(client.control)
        if client.data >= 0 {
            _ = tsv_epoll_set(epollFD, 3, client.data, 0, 0)
            close(client.data)
        }
        setListening(true)
    }

    private func setDataInterest(_ client: RemoteSocket, _ interest: UInt32) {
        guard interest != client.dataInterest, client.data >= 0 else { return }
        client.dataInterest = interest
        _ = tsv_epoll_set(epollFD, 2, client.data, interest, Self.tag(client.id, data: true))
    }

    // MARK: Client to stack

    /// Reads the client's datagrams and sends them, until its channel is
    /// empty, the link is full (then waits for `.writable`), or it hung up.
    private func readFromClient(_ client: RemoteSocket) {
        guard let socket = client.socket, client.waitingForStack.isEmpty else { return }
        for _ in 0..<4 {  // then let other clients have a turn
            let count = Int(tsv_batch_receive(client.data, fromClients, Self.batchCount))
            if count < 0 {
                if errno != EAGAIN { release(client) }
                return
            }
            var next = 0
            var hungUp = false
            var errors: [SocketError] = []
            let batch = fromClients
            let counters = self.counters
            // Yields each well-formed datagram of the batch in order.
            func nextDatagram() -> (Int, UnsafeRawBufferPointer, SocketAddress?, DatagramSendOptions)? {
                while next < count {
                    let index = next
                    next += 1
                    let length = Int(tsv_batch_length(batch, UInt32(index)))
                    if length == 0 {  // end of file: the client closed its descriptor
                        hungUp = true
                        next = count
                        return nil
                    }
                    guard let datagram = Self.datagram(in: batch, at: index, length: length) else {
                        counters.badDatagrams.add(1, ordering: .relaxed)
                        continue
                    }
                    return (index, datagram.payload, datagram.destination, datagram.options)
                }
                return nil
            }
            var current = 0
            let (taken, blocked) = socket.send(batchWithOptions: {
                guard let (index, payload, destination, options) = nextDatagram() else { return nil }
                current = index
                return (payload, destination, options)
            }, failed: { errors.append($0) })
            counters.datagramsSent.add(UInt64(taken - errors.count), ordering: .relaxed)
            counters.sendErrors.add(UInt64(errors.count), ordering: .relaxed)
            for error in errors { queueError(error, for: client) }
            if blocked {
                // The link is full: keep this datagram and the rest of the batch.
                for index in current..<count {
                    let length = Int(tsv_batch_length(fromClients, UInt32(index)))
                    guard length > 0, let datagram = Self.datagram(in: fromClients, at: index, length: length) else { continue }
                    client.waitingForStack.append((datagram.destination, datagram.options, Array(datagram.payload)))
                }
                setDataInterest(client, client.dataInterest & ~UInt32(TSV_IN))
                return
            }
            if hungUp {
                release(client)
                return
            }
            if count < Int(Self.batchCount) { return }
        }
    }

    /// The datagram in slot `index` of `batch`, or nil when malformed.
    private static func datagram(in batch: OpaquePointer, at index: Int, length: Int)
        -> (payload: UnsafeRawBufferPointer, destination: SocketAddress?, options: DatagramSendOptions)? {
        guard tsv_batch_truncated(batch, UInt32(index)) == 0 else { return nil }
        let slot = UnsafeRawPointer(tsv_batch_slot(batch, UInt32(index))!)
        // No magic: a bare payload for the connected peer, written by a raw
        // system call the shim did not see (libuv's sendmmsg).
        guard length >= headerSize, slot.loadUnaligned(as: UInt32.self) == TSP_MAGIC else {
            return (UnsafeRawBufferPointer(start: slot, count: length), nil, DatagramSendOptions())
        }
        let header = slot.loadUnaligned(as: tsp_datagram_header.self)
        guard header.kind == UInt8(TSP_DATAGRAM.rawValue) else { return nil }
        let destination = header.address == 0 && header.port == 0
            ? nil : SocketAddress(IPv4Address(rawValue: UInt32(bigEndian: header.address)), header.port)
        var options = DatagramSendOptions()
        if header.local_address != 0 { options.source = IPv4Address(rawValue: UInt32(bigEndian: header.local_address)) }
        if header.flags & UInt8(TSP_SEND_TTL.rawValue) != 0 { options.timeToLive = header.ttl }
        if header.flags & UInt8(TSP_SEND_TOS.rawValue) != 0 { options.typeOfService = header.tos }
        return (UnsafeRawBufferPointer(start: slot + headerSize, count: length - headerSize), destination, options)
    }

    /// Sends one datagram; false when the link is full (nothing sent).
    /// Other errors are counted and passed to the client.
    private func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress?, options: DatagramSendOptions,
                      on socket: UDPSocket, for client: RemoteSocket) -> Bool {
        do throws(SocketError) {
            try socket.send(payload, to: destination, options: options)
            counters.datagramsSent.add(1, ordering: .relaxed)
        } catch .wouldBlock {
            return false
        } catch {
            counters.sendErrors.add(1, ordering: .relaxed)
            queueError(error, for: client)
        }
        return true
    }

    /// Sends what waited for the link, then reads the channel again.
    private func retryToStack(_ client: RemoteSocket) {
        guard let socket = client.socket else { return }
        while let first = client.waitingForStack.first {
            let sent = first.payload.withUnsafeBytes { send($0, to: first.destination, options: first.options, on: socket, for: client) }
            if !sent { return }
            client.waitingForStack.removeFirst()
        }
        setDataInterest(client, client.dataInterest | UInt32(TSV_IN))
        readFromClient(client)
    }

    // MARK: Stack to client

    /// An asynchronous error for the client's next receive. Like a kernel
    /// socket's pending error, at most one waits: a client that does not
    /// read cannot make errors pile up.
    private func queueError(_ error: SocketError, for client: RemoteSocket) {
        let errorKind = UInt8(TSP_ERROR.rawValue)
        let kindOffset = MemoryLayout<tsp_datagram_header>.offset(of: \tsp_datagram_header.kind)!
        if client.waitingForClient.contains(where: { $0.count == Self.headerSize && $0[kindOffset] == errorKind }) { return }
        var header = tsp_datagram_header()
        header.magic = TSP_MAGIC
        header.kind = UInt8(TSP_ERROR.rawValue)
        header.error = UInt8(truncatingIfNeeded: error.errno)
        client.waitingForClient.append(withUnsafeBytes(of: header) { Array($0) })
        counters.errorsDelivered.add(1, ordering: .relaxed)
        flushToClient(client)
    }

    /// Counts and forgets the datagrams waiting for a client whose channel failed.
    private func dropWaitingForClient(_ client: RemoteSocket) {
        let errorKind = UInt8(TSP_ERROR.rawValue)
        let kindOffset = MemoryLayout<tsp_datagram_header>.offset(of: \tsp_datagram_header.kind)!
        let datagrams = client.waitingForClient.count { !($0.count == Self.headerSize && $0[kindOffset] == errorKind) }
        counters.droppedClientGone.add(UInt64(datagrams), ordering: .relaxed)
        client.waitingForClient.removeAll()
    }

    /// Passes the stack socket's datagrams (and errors) to the client's
    /// channel until the socket is empty or the channel full (then waits
    /// for the channel to drain).
    private func flushToClient(_ client: RemoteSocket) {
        guard let socket = client.socket else { return }
        while let first = client.waitingForClient.first {
            let n = first.withUnsafeBytes { Glibc.send(client.data, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EAGAIN {
                    setDataInterest(client, client.dataInterest | UInt32(TSV_OUT))
                    return
                }
                // EPIPE etc.: the client cannot take what waits for it.
                dropWaitingForClient(client)
                break
            }
            client.waitingForClient.removeFirst()
        }
        setDataInterest(client, client.dataInterest & ~UInt32(TSV_OUT))
        let batch = toClients
        let headerSize = Self.headerSize, slotSize = Self.slotSize
        // Toward a connected socket datagrams go bare (the source is the
        // peer), so that a program reading with raw system calls gets just
        // the payload; one that begins with TSP_MAGIC stays framed.
        let bare = !client.wantsInfo && socket.remoteAddress != nil
        // CLOCK_REALTIME minus CLOCK_MONOTONIC, once per flush: turns arrival instants into SO_TIMESTAMP's time.
        let wallClockOffset = wallClockNanoseconds(at: .zero)
        while true {
            var count: UInt32 = 0
            var failed: SocketError?
            do throws(SocketError) {
                count = UInt32(try socket.receive(upTo: Int(Self.batchCount), into: { index in
                    UnsafeMutableRawBufferPointer(start: tsv_batch_slot(batch, UInt32(index))! + headerSize, count: slotSize - headerSize)
                }, receivedInfo: { index, info in
                    let slot = tsv_batch_slot(batch, UInt32(index))!
                    let kept = min(info.length, slotSize - headerSize)
                    if bare && (kept < 4 || (slot + headerSize).loadUnaligned(as: UInt32.self) != TSP_MAGIC) {
                        slot.copyMemory(from: slot + headerSize, byteCount: kept)
                        tsv_batch_set_length(batch, UInt32(index), UInt32(kept))
                        return
                    }
                    var header = tsp_datagram_header()
                    header.magic = TSP_MAGIC
                    header.address = info.source.rawValue.bigEndian
                    header.port = info.sourcePort
                    header.local_address = info.destination.rawValue.bigEndian
                    header.ttl = info.timeToLive
                    header.tos = info.typeOfService
                    header.timestamp_ns = wallClockOffset &+ info.receivedAt.nanoseconds
                    slot.storeBytes(of: header, as: tsp_datagram_header.self)
                    tsv_batch_set_length(batch, UInt32(index), UInt32(headerSize + kept))
                }))
            } catch {
                if error != .wouldBlock && error != .closed { failed = error }
            }
            if count > 0 {
                let sent = max(0, Int(tsv_batch_send(client.data, toClients, 0, count)))
                counters.datagramsReceived.add(UInt64(sent), ordering: .relaxed)
                if sent < count {
                    if errno != EAGAIN {
                        // The client is gone or no longer reads (its hang-up,
                        // if any, follows): what it did not take is lost.
                        // Keep draining: the stack socket's readiness fires
                        // again only once it is empty.
                        counters.droppedClientGone.add(UInt64(count) - UInt64(sent), ordering: .relaxed)
                        if count < Self.batchCount { return }
                        continue
                    }
                    for index in UInt32(sent)..<count {
                        let slot = UnsafeRawPointer(tsv_batch_slot(toClients, index)!)
                        client.waitingForClient.append(Array(UnsafeRawBufferPointer(start: slot, count: Int(tsv_batch_length(toClients, index)))))
                    }
                    if let failed { queueError(failed, for: client) }
                    setDataInterest(client, client.dataInterest | UInt32(TSV_OUT))
                    return
                }
            }
            if let failed {
                queueError(failed, for: client)
                return
            }
            if count < Self.batchCount { return }
        }
    }
}

/// News from the stack thread for the service thread: which sockets have
/// something, and the wake-up for a sleeping service thread.
final class News: Sendable {
    let ids = Mutex<[UInt64]>([])
    let pending = Atomic<Bool>(false)
    let wakeup = Wakeup()

    func post(_ id: UInt64) {
        ids.withLock { $0.append(id) }
        pending.store(true, ordering: .sequentiallyConsistent)
        wakeup.signal()
    }
}
