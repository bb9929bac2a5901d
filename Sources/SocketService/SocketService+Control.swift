import CTapstackChannel
import TapstackProtocol
import FoundationEssentials
import Glibc
import Host
import SocketAPI
import Sockets
import Stack
import Synchronization
import Wire

// Control requests: open, bind, connect, options, names, the error queue,
// introspection; one request, one reply.
extension SocketService {
    // MARK: Control requests

    func serveControl(_ client: RemoteSocket, events: UInt32) {
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
    func perform(_ request: tsp_request, for client: RemoteSocket, reply: inout tsp_reply,
                         passing passed: inout Int32) -> Int32 {
        if UInt32(request.op) == TSP_OPEN.rawValue {
            return open(client, family: request.option, nonblocking: request.value != 0, reply: &reply, passing: &passed)
        }
        if UInt32(request.op) == TSP_QUERY.rawValue {
            return answer(query: request.option, reply: &reply, passing: &passed)
        }
        guard let socket = client.socket else { return EBADF }
        var requested = request.address
        let address = requested.socketAddress(port: request.port)
        do throws(SocketError) {
            switch UInt32(request.op) {
            case TSP_BIND.rawValue:
                try socket.bind(to: address)
            case TSP_CONNECT.rawValue:
                if tsp_address_is_unspecified(&requested) != 0 && request.port == 0 { socket.disconnect() } else { try socket.connect(to: address) }
            case TSP_SETOPT.rawValue:
                switch UInt32(bitPattern: request.option) {
                case TSP_OPT_BROADCAST.rawValue: socket.allowsBroadcast = request.value != 0
                case TSP_OPT_REUSEADDR.rawValue: socket.reuseAddress = request.value != 0
                case TSP_OPT_DONTFRAG.rawValue: socket.dontFragment = request.value != 0
                case TSP_OPT_RCVBUF.rawValue:
                    socket.receiveBufferSize = Int(max(request.value, 0))
                    // What waits in the channel counts against the receive
                    // buffer too: bound the service's end to the same size,
                    // so a program that asks for a small buffer and does not
                    // read loses datagrams (counted) as on Linux, instead of
                    // having the channel's default 200 KiB besides.
                    var size = Int32(clamping: socket.receiveBufferSize)
                    _ = setsockopt(client.data, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
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
                case TSP_OPT_V6ONLY.rawValue:
                    // Linux: an AF_INET socket has no such option; a bound one may not change it.
                    guard socket.family == .ipv6 else { return ENOPROTOOPT }
                    guard socket.localAddress == nil else { return EINVAL }
                    socket.v6Only = request.value != 0
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
                case TSP_OPT_V6ONLY.rawValue:
                    guard socket.family == .ipv6 else { return ENOPROTOOPT }
                    reply.value = socket.v6Only ? 1 : 0
                default: return ENOPROTOOPT
                }
            case TSP_NAMES.rawValue:
                break
            case TSP_RING.rawValue:
                return shareRegion(with: client, receiving: request.value & 1 != 0, wantsWakeDescriptor: request.value & 2 != 0,
                                   passing: &passed)
            case TSP_ERRQUEUE.rawValue:
                guard let queued = socket.takeQueuedError() else { return EAGAIN }
                reply.value = queued.error.errno
                reply.remote_address = queued.destination6.map(tsp_address.init) ?? tsp_address(queued.destination)
                reply.remote_port = queued.destinationPort
                reply.queued.type = queued.type
                reply.queued.code = queued.code
                reply.queued.info = queued.info
                reply.queued.offender = queued.offender6.map(tsp_address.init) ?? tsp_address(queued.offender)
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

    func changeMembership(of socket: UDPSocket, option: UInt32, _ request: tsp_request) throws(SocketError) {
        guard let group = request.address.ipv6Address.mappedIPv4 else {
            // An IPv6 group: any source only (IPV6_JOIN_GROUP / IPV6_LEAVE_GROUP).
            guard option == TSP_OPT_ADD_MEMBERSHIP.rawValue || option == TSP_OPT_DROP_MEMBERSHIP.rawValue else { throw .invalidArgument }
            let group = request.address.ipv6Address
            if option == TSP_OPT_ADD_MEMBERSHIP.rawValue { try socket.join(group: group) } else { try socket.leave(group: group) }
            return
        }
        let sources: [IPv4Address]? = option == TSP_OPT_ADD_SOURCE_MEMBERSHIP.rawValue || option == TSP_OPT_DROP_SOURCE_MEMBERSHIP.rawValue
            ? [request.source.ipv6Address.mappedIPv4 ?? .any] : nil
        if option == TSP_OPT_ADD_MEMBERSHIP.rawValue || option == TSP_OPT_ADD_SOURCE_MEMBERSHIP.rawValue {
            try socket.join(group: group, sources: sources)
        } else {
            try socket.leave(group: group, sources: sources)
        }
    }

    // MARK: Introspection

    /// Answers `tapstack ss` and `tapstack stats`: the JSON goes in a memfd
    /// passed with the reply, so an answer of any size never blocks this thread.
    func answer(query: Int32, reply: inout tsp_reply, passing passed: inout Int32) -> Int32 {
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
    func socketRecords() -> [SocketRecord] {
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

    func fillNames(of socket: UDPSocket, into reply: inout tsp_reply) {
        if let local = socket.localAddress {
            reply.local_address = tsp_address(local)
            reply.local_port = local.port
        }
        if let remote = socket.remoteAddress {
            reply.connected = 1
            reply.remote_address = tsp_address(remote)
            reply.remote_port = remote.port
        }
    }

    func open(_ client: RemoteSocket, family: Int32, nonblocking: Bool, reply: inout tsp_reply, passing passed: inout Int32) -> Int32 {
        guard client.socket == nil else { return EINVAL }
        guard family == 0 || family == AF_INET || family == AF_INET6 else { return EAFNOSUPPORT }  // 0: AF_INET
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
        let socket = UDPSocket(host: host, family: family == AF_INET6 ? .ipv6 : .ipv4)
        client.socket = socket
        client.data = fds.0
        client.dataInterest = UInt32(TSV_IN)
        _ = tsv_epoll_set(epollFD, 1, fds.0, client.dataInterest, Self.tag(client.id, data: true))
        let news = self.news, flag = client.flag, id = client.id, host = self.host
        // Made once: a closure per delivery would allocate. (Both hold the
        // client until its release removes the callback.)
        let deliver: @Sendable () -> Void = { [self] in self.deliverInRegion(client) }
        client.callbackToken = socket.addReadinessCallback([.readable, .writable, .error]) { events in
            // Received datagrams of a client reading its region go there from
            // the executor, after this batch: no hop to the service thread.
            if events == .readable && client.deliversInRegion.load(ordering: .relaxed) {
                if !client.deliveryScheduled.exchange(true, ordering: .sequentiallyConsistent) {
                    host.execute(deliver)
                }
                return
            }
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

    /// Makes the client's region on its first TSP_RING (passing it) and
    /// moves received datagrams there when asked; passes the region's
    /// doorbell eventfd when asked for it (`value` 2).
    func shareRegion(with client: RemoteSocket, receiving: Bool, wantsWakeDescriptor: Bool, passing passed: inout Int32) -> Int32 {
        client.delivery.withLock {
            defer { client.updateDeliveryHint() }
            return shareRegionLocked(with: client, receiving: receiving, wantsWakeDescriptor: wantsWakeDescriptor, passing: &passed)
        }
    }

    private func shareRegionLocked(with client: RemoteSocket, receiving: Bool, wantsWakeDescriptor: Bool,
                                   passing passed: inout Int32) -> Int32 {
        if wantsWakeDescriptor {
            guard let sender = client.sender, sender.wakeDescriptor >= 0 else { return EOPNOTSUPP }
            passed = dup(sender.wakeDescriptor)  // the reply's copy, closed once sent
            return passed >= 0 ? 0 : errno
        }
        if client.region == nil {
            var fd: Int32 = -1
            guard let region = tsv_region_create(&fd) else { return errno == 0 ? ENOMEM : errno }
            client.region = region
            passed = fd
            counters.regionsShared.add(1, ordering: .relaxed)
            let sender = RegionSender(service: self, client: client, region: region)
            client.sender = sender
            // Without a doorbell the executor could see, the service thread serves the ring alone.
            if sender.wakeDescriptor >= 0 { host.addSource(sender) }
        }
        if receiving && !client.receivesInRegion {
            client.receivesInRegion = true
            client.receiveFallback = true  // what waits on the channel is read first
        }
        return 0
    }

    /// A client wrote what no ring end writes: it loses its socket, nobody else anything.
    func releaseBrokenRegion(_ client: RemoteSocket) {
        counters.brokenRegions.add(1, ordering: .relaxed)
        release(client)
    }

    /// Closes the client's connections and its stack socket (port freed,
    /// queued datagrams dropped).
    func release(_ client: RemoteSocket) {
        guard clients.removeValue(forKey: client.id) != nil else { return }
        // Under `delivery`: the executor may be putting datagrams in the region.
        client.delivery.withLock {
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
            // The sender unmaps the region once the executor let it go.
            client.region = nil
            if let sender = client.sender {
                host.removeSource(sender)  // a poll still running finds `client.region` nil
                client.sender = nil
            }
            client.updateDeliveryHint()
        }
        _ = tsv_epoll_set(epollFD, 3, client.control, 0, 0)
        close(client.control)
        if client.data >= 0 {
            _ = tsv_epoll_set(epollFD, 3, client.data, 0, 0)
            close(client.data)
        }
        revisit.remove(client.id)
        setListening(true)
    }

    func setDataInterest(_ client: RemoteSocket, _ interest: UInt32) {
        guard interest != client.dataInterest, client.data >= 0 else { return }
        client.dataInterest = interest
        _ = tsv_epoll_set(epollFD, 2, client.data, interest, Self.tag(client.id, data: true))
    }
}
