import SocketAPI
import Wire

/// Per-datagram overrides of a socket's settings (sendmsg's control messages).
public struct DatagramSendOptions: Sendable, Equatable {
    /// The source address (IP_PKTINFO's ipi_spec_dst): ours or unspecified.
    public var source: IPv4Address?
    /// The IPv6 source address (IPV6_PKTINFO's ipi6_addr): ours or unspecified.
    public var source6: IPv6Address?
    /// The TTL (IP_TTL control message).
    public var timeToLive: UInt8?
    /// The TOS byte (IP_TOS control message).
    public var typeOfService: UInt8?

    public init(source: IPv4Address? = nil, timeToLive: UInt8? = nil, typeOfService: UInt8? = nil) {
        self.source = source
        self.timeToLive = timeToLive
        self.typeOfService = typeOfService
    }
}

// UDP (RFC 768, RFC 1122 4.1) and the socket-facing operations.
extension NetworkStack {
    func receiveUDP(_ packet: IPv4PacketView, linkBroadcast: Bool, now: StackInstant) {
        guard let datagram = udpDatagram(in: packet.payload) else { return }
        // A checksum the link vouches for (a local sender left it partial) is not checked.
        let checksumStart = EthernetHeader.length + packet.headerLength
        guard receivedChecksum.vouches(start: checksumStart, offset: UDPDatagramView.Field.checksum)
                || datagram.checksumIsValid(source: packet.source, destination: packet.destination) else {
            return drop(.udpDropBadChecksum)
        }
        if packet.destination.isMulticast {
            // Never answered with an ICMP error (RFC 1122 3.2.2).
            guard deliverMulticast(datagram, from: packet, now: now) else { return drop(.udpDropMulticastNoMember) }
            return count(.udpRxMulticastDelivered)
        }
        if isBroadcast(packet.destination) {
            // A broadcast goes to every socket that would take it.
            let receivers = matchingEndpoints(for: datagram, from: packet)
            for endpoint in receivers { enqueue(datagram, from: packet, on: endpoint, now: now) }
            if !receivers.isEmpty { return }
        }
        guard let endpoint = isBroadcast(packet.destination) ? nil : bestEndpoint(for: datagram, from: packet) else {
            drop(.udpDropNoPort)
            // RFC 1122 4.1.3.1: a datagram for a port nobody listens on gets port unreachable.
            return sendICMPError(type: ICMPv4Type.destinationUnreachable, code: ICMPv4UnreachableCode.port,
                                 about: packet, linkBroadcast: linkBroadcast, now: now)
        }
        enqueue(datagram, from: packet, on: endpoint, now: now)
    }

    /// Sockets on the destination port that accept a datagram from this source.
    func matchingEndpoints(for datagram: UDPDatagramView, from packet: IPv4PacketView) -> [UDPEndpoint] {
        (udpEndpoints[datagram.destinationPort] ?? []).filter { accepts($0, datagram, packet) }
    }

    /// Demultiplexing order: a socket connected to exactly this peer, then one
    /// bound to this destination address, then a wildcard one.
    func bestEndpoint(for datagram: UDPDatagramView, from packet: IPv4PacketView) -> UDPEndpoint? {
        let port = datagram.destinationPort
        if let last = lastDelivery, last.port == port, last.version == endpointsVersion,
           last.endpoint.localAddress.isUnspecified || last.endpoint.localAddress == packet.destination {
            return last.endpoint
        }
        guard let candidates = udpEndpoints[port] else { return nil }
        if candidates.count == 1, candidates[0].remote == nil, candidates[0].takesIPv4 {
            lastDelivery = (port, candidates[0], endpointsVersion)
        }
        var best: UDPEndpoint?
        var bestScore = -1
        for endpoint in candidates where accepts(endpoint, datagram, packet) {
            let score = (endpoint.remote != nil ? 2 : 0) + (endpoint.localAddress.isUnspecified ? 0 : 1)
            if score > bestScore {
                best = endpoint
                bestScore = score
            }
        }
        return best
    }

    func accepts(_ endpoint: UDPEndpoint, _ datagram: UDPDatagramView, _ packet: IPv4PacketView) -> Bool {
        if !endpoint.takesIPv4 { return false }
        if !endpoint.localAddress.isUnspecified && endpoint.localAddress != packet.destination { return false }
        if let remote = endpoint.remote, remote.address != packet.source || remote.port != datagram.sourcePort { return false }
        return true
    }

    /// The connected socket for a datagram we sent from `localPort` to `remote`.
    func connectedEndpoint(localPort: UInt16, remote: IPv4Address, remotePort: UInt16) -> UDPEndpoint? {
        udpEndpoints[localPort]?.first { $0.remote?.address == remote && $0.remote?.port == remotePort }
    }

    /// Queues a datagram on a socket, within its datagram and byte bounds.
    func enqueue(_ datagram: UDPDatagramView, from packet: IPv4PacketView, on endpoint: UDPEndpoint, now: StackInstant) {
        enqueue(datagram.payload, info: DatagramInfo(source: packet.source, sourcePort: datagram.sourcePort,
                                                     destination: packet.destination, length: datagram.payload.count,
                                                     timeToLive: packet.ttl, typeOfService: packet.typeOfService,
                                                     receivedAt: now), on: endpoint)
    }

    /// Counts a UDP datagram in and checks its header (either family); nil
    /// when it is cut short or its length field is impossible (counted drops).
    @inline(__always)
    func udpDatagram(in bytes: UnsafeRawBufferPointer) -> UDPDatagramView? {
        count(.udpRxDatagrams)
        do { return try UDPDatagramView(bytes) } catch {
            drop(error == .badLength ? .udpDropBadLength : .udpDropTruncated)
            return nil
        }
    }

    /// Queues a payload and its facts on a socket (either family), within
    /// its datagram and byte bounds; the first one waiting makes it readable.
    @inline(__always)
    func enqueue(_ payload: UnsafeRawBufferPointer, info: DatagramInfo, on endpoint: UDPEndpoint) {
        guard !endpoint.receiveQueue.wouldOverflow(adding: payload.count) else {
            endpoint.droppedDatagrams &+= 1
            return drop(.udpDropQueueFull)
        }
        let wasEmpty = endpoint.receiveQueue.isEmpty
        endpoint.receiveQueue.push(payload, info: info)
        count(.udpRxDelivered)
        endpoint.receivedDatagrams &+= 1
        if wasEmpty { endpoint.onEvent?(.readable) }
    }

    // MARK: Socket operations

    /// Creates an unbound UDP endpoint: IPv4 (AF_INET), or IPv6 and, unless
    /// its `v6Only` is set, IPv4 too (AF_INET6).
    public func openUDP(family: AddressFamily = .ipv4) -> UDPEndpoint {
        defer { nextEndpointID += 1 }
        return UDPEndpoint(id: nextEndpointID, family: family, queueDatagrams: configuration.udpReceiveQueueDatagrams,
                           queueBytes: configuration.udpReceiveQueueBytes)
    }

    /// Binds `endpoint` to `address` (ours or .any) and `port` (0 picks an ephemeral port).
    /// - Throws: `.addressInUse` (the port is taken, unless every socket on
    ///   it sets `reuseAddress`), `.addressNotAvailable`, `.invalidArgument`
    ///   (already bound), `.closed`, `.noPortsAvailable`.
    public func bind(_ endpoint: UDPEndpoint, address requested: IPv4Address = .any, port: UInt16) throws(SocketError) {
        guard !endpoint.isClosed else { throw .closed }
        guard endpoint.localPort == 0 else { throw .invalidArgument }
        guard requested.isUnspecified || requested == address || isBroadcast(requested) || requested.isMulticast
                || endpoint.freeBind else { throw .addressNotAvailable }
        let chosen: UInt16
        if port == 0 {
            chosen = try allocateEphemeralPort()
        } else {
            endpoint.localAddress = requested  // what the conflict check compares
            do { try checkPortFree(port, for: endpoint) } catch {
                endpoint.localAddress = .any
                throw error
            }
            chosen = port
        }
        endpoint.localAddress = requested
        endpoint.localPort = chosen
        udpEndpoints[chosen, default: []].append(endpoint)
    }

    /// `.addressInUse` when a socket on `port` could take the same datagrams
    /// (either family), unless both set `reuseAddress`.
    func checkPortFree(_ port: UInt16, for endpoint: UDPEndpoint) throws(SocketError) {
        let conflict = (udpEndpoints[port] ?? []).contains { other in
            !(other.reuseAddress && endpoint.reuseAddress) && other.overlaps(endpoint)
        }
        if conflict { throw .addressInUse }
    }

    func allocateEphemeralPort() throws(SocketError) -> UInt16 {
        let range = Self.ephemeralPorts
        let size = Int(range.upperBound - range.lowerBound) + 1
        for _ in 0..<size {
            let candidate = nextEphemeralPort
            nextEphemeralPort = candidate == range.upperBound ? range.lowerBound : candidate + 1
            if udpEndpoints[candidate]?.isEmpty ?? true { return candidate }
        }
        throw .noPortsAvailable
    }

    /// Sets the peer (binding an ephemeral port first if unbound); `.any` as
    /// address disconnects. A pending error is cleared.
    /// - Throws: `.closed`, `.invalidArgument` (port 0), `.networkUnreachable`,
    ///   `.permissionDenied` (broadcast without opting in).
    public func connect(_ endpoint: UDPEndpoint, to destination: IPv4Address, port: UInt16) throws(SocketError) {
        guard !endpoint.isClosed else { throw .closed }
        if destination.isUnspecified {
            endpoint.remote = nil
            endpointsVersion &+= 1
            return
        }
        guard port != 0 else { throw .invalidArgument }
        guard !isBroadcast(destination) || endpoint.allowsBroadcast else { throw .permissionDenied }
        _ = try route(to: destination)
        if endpoint.localPort == 0 { try bind(endpoint, port: 0) }
        endpoint.remote = (destination, port)
        endpoint.pendingError = nil
        endpointsVersion &+= 1
    }

    /// Sends one datagram from `endpoint` to `destination`, or to its peer
    /// when `destination` is nil (bound to an ephemeral port first if unbound).
    /// `options` overrides the socket's source, TTL and TOS for this datagram
    /// (IP_PKTINFO, IP_TTL and IP_TOS control messages).
    /// - Throws: a pending asynchronous error first (then cleared); `.closed`;
    ///   `.notConnected` (no destination and no peer); `.invalidArgument`
    ///   (port 0, unspecified address, or a source that is not ours);
    ///   `.permissionDenied` (broadcast without opting in); `.messageTooLong`;
    ///   `.networkUnreachable`; `.wouldBlock` (link full: try again when writable).
    public func send(_ payload: UnsafeRawBufferPointer, from endpoint: UDPEndpoint,
                     to destination: (address: IPv4Address, port: UInt16)?, options: DatagramSendOptions = DatagramSendOptions(),
                     now: StackInstant) throws(SocketError) {
        guard !endpoint.isClosed else { throw .closed }
        if let error = endpoint.pendingError {
            endpoint.pendingError = nil
            throw error
        }
        if destination == nil, let remote6 = endpoint.remote6 {
            return try sendIPv6(payload, from: endpoint, to: remote6, options: options, now: now)
        }
        guard let (target, port) = destination ?? endpoint.remote else { throw .notConnected }
        // An IPv6 socket bound to an IPv6 address cannot send IPv4 (Linux: ENETUNREACH).
        guard endpoint.family == .ipv4 || endpoint.localAddress6.isUnspecified else { throw .networkUnreachable }
        guard port != 0, !target.isUnspecified else { throw .invalidArgument }
        guard !isBroadcast(target) || endpoint.allowsBroadcast else { throw .permissionDenied }
        guard UDPHeader.length + payload.count <= 0xFFFF - IPv4Header.length else { throw .messageTooLong }
        // Only our own address can be a source (Linux: EINVAL for another without IP_TRANSPARENT).
        if let source = options.source, !source.isUnspecified, source != address { throw .invalidArgument }
        if endpoint.localPort == 0 { try bind(endpoint, port: 0) }
        let header = UDPHeader(sourcePort: endpoint.localPort, destinationPort: port, payloadLength: payload.count)
        let source = address
        // A local function, not a closure value: passed only as a
        // non-escaping argument, it needs no heap context per datagram.
        func fill(_ buffer: UnsafeMutableRawBufferPointer, _ partialChecksum: Bool) {
            if payload.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: buffer[UDPHeader.length...]).copyMemory(from: payload)
            }
            if partialChecksum {
                header.emitPartial(intoDatagram: buffer, source: source, destination: target)
            } else {
                header.emit(intoDatagram: buffer, source: source, destination: target)
            }
        }
        let multicast = target.isMulticast
        let timeToLive = options.timeToLive ?? (multicast ? endpoint.multicastTimeToLive : endpoint.timeToLive)
        let typeOfService = options.typeOfService ?? endpoint.typeOfService
        try countingSend(from: endpoint) { () throws(SocketError) in
            try sendIPv4(proto: .udp, to: target, payloadLength: UDPHeader.length + payload.count, typeOfService: typeOfService,
                         timeToLive: timeToLive, dontFragment: endpoint.dontFragment, owner: endpoint,
                         transportChecksumOffset: UDPDatagramView.Field.checksum, now: now, fill: fill)
        }
        // IP_MULTICAST_LOOP: our own sockets in the group hear it too, as on Linux.
        if multicast && endpoint.multicastLoop && multicastGroups[target] != nil {
            count(.udpTxMulticastLoopedBack)
            loopBack(proto: .udp, to: target, payloadLength: UDPHeader.length + payload.count, typeOfService: typeOfService,
                     timeToLive: timeToLive, now: now, fill: fill)
        }
    }

    /// Runs one datagram's send for `endpoint` (either family): a full link
    /// asks for a `.writable` event; a datagram sent is counted.
    @inline(__always)
    func countingSend(from endpoint: UDPEndpoint, _ send: () throws(SocketError) -> Void) throws(SocketError) {
        do {
            try send()
        } catch .wouldBlock {
            endpoint.wantsWritable = true
            throw .wouldBlock
        }
        count(.udpTxDatagrams)
        endpoint.sentDatagrams &+= 1
    }

    /// Every bound socket, by local port, then in the order they were opened
    /// (what `tapstack ss` lists).
    public var udpSockets: [UDPEndpoint] {
        udpEndpoints.keys.sorted().flatMap { port in udpEndpoints[port]!.sorted { $0.id < $1.id } }
    }

    /// The events true for `endpoint` now: its own, plus `.writable` when
    /// the link can take a frame.
    public func readiness(of endpoint: UDPEndpoint) -> ReadinessEvents {
        var events = endpoint.readiness
        if !endpoint.isClosed, sink.hasRoom(for: 1 + configuration.transmitReserveFrames) { events.insert(.writable) }
        return events
    }

    /// Tells every socket whose send found the link full that it has room
    /// again. Called when the link drained.
    public func notifyWritable() {
        for endpoints in udpEndpoints.values {
            for endpoint in endpoints where endpoint.wantsWritable {
                endpoint.wantsWritable = false
                endpoint.onEvent?(.writable)
            }
        }
    }

    /// Sends one datagram to `destination`:`port`; see `send(_:from:to:now:)`.
    public func send(_ payload: UnsafeRawBufferPointer, from endpoint: UDPEndpoint,
                     to destination: IPv4Address, port: UInt16, now: StackInstant) throws(SocketError) {
        try send(payload, from: endpoint, to: (destination, port), now: now)
    }

    /// Takes the oldest queued datagram.
    /// - Throws: a pending asynchronous error first (then cleared), then
    ///   `.wouldBlock` when nothing is queued, `.closed` after close.
    public func receive(from endpoint: UDPEndpoint) throws(SocketError) -> ReceivedDatagram {
        guard !endpoint.isClosed else { throw .closed }
        if let error = endpoint.pendingError {
            endpoint.pendingError = nil
            throw error
        }
        guard let (info, payload) = endpoint.receiveQueue.pop() else { throw .wouldBlock }
        return ReceivedDatagram(source: info.source, sourcePort: info.sourcePort, destination: info.destination, payload: payload,
                                source6: info.source6)
    }

    /// Copies the oldest queued datagram into `buffer` without allocating;
    /// a datagram longer than `buffer` is cut (the info gives its full
    /// length, like MSG_TRUNC). Throws as `receive(from:)`.
    public func receive(from endpoint: UDPEndpoint, into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> DatagramInfo {
        guard !endpoint.isClosed else { throw .closed }
        if let error = endpoint.pendingError {
            endpoint.pendingError = nil
            throw error
        }
        guard let info = endpoint.receiveQueue.pop(into: buffer) else { throw .wouldBlock }
        return info
    }

    /// Lends the oldest queued datagram to `body` in place (no copy); it
    /// is removed when `body` returns true and stays queued when false.
    /// Returns what `body` returned. Throws as `receive(from:)`.
    public func receive(from endpoint: UDPEndpoint, lending body: (UnsafeRawBufferPointer, DatagramInfo) -> Bool) throws(SocketError) -> Bool {
        guard !endpoint.isClosed else { throw .closed }
        if let error = endpoint.pendingError {
            endpoint.pendingError = nil
            throw error
        }
        guard let taken = endpoint.receiveQueue.withOldest(body) else { throw .wouldBlock }
        return taken
    }

    /// Closes `endpoint`: frees its port, drops its queue, signals `.closed`.
    public func close(_ endpoint: UDPEndpoint) {
        guard !endpoint.isClosed else { return }
        if endpoint.localPort != 0 {
            udpEndpoints[endpoint.localPort]?.removeAll { $0 === endpoint }
            if udpEndpoints[endpoint.localPort]?.isEmpty == true { udpEndpoints[endpoint.localPort] = nil }
        }
        leaveAll(for: endpoint, now: latestInstant)
        leaveAllIPv6(for: endpoint, now: latestInstant)
        endpoint.isClosed = true
        endpoint.receiveQueue.removeAll()
        endpoint.pendingError = nil
        endpoint.onEvent?(.closed)
        endpoint.onEvent = nil
    }
}
