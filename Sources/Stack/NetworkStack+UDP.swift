import Wire

// UDP (RFC 768, RFC 1122 4.1) and the socket-facing operations.
extension NetworkStack {
    func receiveUDP(_ packet: IPv4PacketView, now: StackInstant) {
        count(.udpRxDatagrams)
        let datagram: UDPDatagramView
        do {
            datagram = try UDPDatagramView(packet.payload)
        } catch {
            return drop(error == .badLength ? .udpDropBadLength : .udpDropTruncated)
        }
        guard datagram.checksumIsValid(source: packet.source, destination: packet.destination) else {
            return drop(.udpDropBadChecksum)
        }
        guard let endpoint = udpEndpoints[datagram.destinationPort],
              endpoint.localAddress.isUnspecified || endpoint.localAddress == packet.destination else {
            return drop(.udpDropNoPort)
        }
        enqueue(datagram, from: packet, on: endpoint)
    }

    /// Queues a datagram on a socket, within its datagram and byte bounds.
    func enqueue(_ datagram: UDPDatagramView, from packet: IPv4PacketView, on endpoint: UDPEndpoint) {
        let payload = datagram.payload
        guard !endpoint.receiveQueue.isFull,
              endpoint.queuedBytes + payload.count <= endpoint.maximumQueuedBytes else {
            return drop(.udpDropQueueFull)
        }
        let wasEmpty = endpoint.receiveQueue.isEmpty
        endpoint.receiveQueue.push(ReceivedDatagram(source: packet.source, sourcePort: datagram.sourcePort,
                                                    destination: packet.destination, payload: Array(payload)))
        endpoint.queuedBytes += payload.count
        count(.udpRxDelivered)
        if wasEmpty { endpoint.onEvent?(.readable) }
    }

    // MARK: Socket operations

    /// Creates an unbound UDP endpoint.
    public func openUDP() -> UDPEndpoint {
        defer { nextEndpointID += 1 }
        return UDPEndpoint(id: nextEndpointID, queueDatagrams: configuration.udpReceiveQueueDatagrams,
                           queueBytes: configuration.udpReceiveQueueBytes)
    }

    /// Binds `endpoint` to `address` (ours or .any) and `port` (0 picks an ephemeral port).
    /// - Throws: `.addressInUse`, `.addressNotAvailable`, `.invalidArgument` (already bound), `.closed`.
    public func bind(_ endpoint: UDPEndpoint, address requested: IPv4Address = .any, port: UInt16) throws(StackError) {
        guard !endpoint.isClosed else { throw .closed }
        guard endpoint.localPort == 0 else { throw .invalidArgument }
        guard requested.isUnspecified || requested == address else { throw .addressNotAvailable }
        let chosen: UInt16
        if port == 0 {
            chosen = try allocateEphemeralPort()
        } else {
            guard udpEndpoints[port] == nil else { throw .addressInUse }
            chosen = port
        }
        endpoint.localAddress = requested
        endpoint.localPort = chosen
        udpEndpoints[chosen] = endpoint
    }

    func allocateEphemeralPort() throws(StackError) -> UInt16 {
        let range = Self.ephemeralPorts
        let size = Int(range.upperBound - range.lowerBound) + 1
        for _ in 0..<size {
            let candidate = nextEphemeralPort
            nextEphemeralPort = candidate == range.upperBound ? range.lowerBound : candidate + 1
            if udpEndpoints[candidate] == nil { return candidate }
        }
        throw .noPortsAvailable
    }

    /// Sends one datagram from `endpoint` (bound to an ephemeral port first if unbound).
    /// - Throws: `.closed`, `.invalidArgument` (port 0 or unspecified address),
    ///   `.permissionDenied` (broadcast without opting in), `.messageTooLong`,
    ///   `.networkUnreachable`, `.wouldBlock` (link full: try again when writable).
    public func send(_ payload: UnsafeRawBufferPointer, from endpoint: UDPEndpoint,
                     to destination: IPv4Address, port: UInt16, now: StackInstant) throws(StackError) {
        guard !endpoint.isClosed else { throw .closed }
        if let error = endpoint.pendingError {
            endpoint.pendingError = nil
            throw error
        }
        guard port != 0, !destination.isUnspecified else { throw .invalidArgument }
        let isBroadcast = destination.isLimitedBroadcast || destination == configuration.interface.subnetBroadcast
        guard !isBroadcast || endpoint.allowsBroadcast else { throw .permissionDenied }
        guard UDPHeader.length + payload.count <= 0xFFFF - IPv4Header.length else { throw .messageTooLong }
        if endpoint.localPort == 0 { try bind(endpoint, port: 0) }
        let header = UDPHeader(sourcePort: endpoint.localPort, destinationPort: port, payloadLength: payload.count)
        let source = address
        try sendIPv4(proto: .udp, to: destination, payloadLength: UDPHeader.length + payload.count,
                     owner: endpoint, now: now) { buffer in
            if payload.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: buffer[UDPHeader.length...]).copyMemory(from: payload)
            }
            header.emit(intoDatagram: buffer, source: source, destination: destination)
        }
        count(.udpTxDatagrams)
    }

    /// Takes the oldest queued datagram.
    /// - Throws: a pending asynchronous error first, then `.wouldBlock` when
    ///   nothing is queued, `.closed` after close.
    public func receive(from endpoint: UDPEndpoint) throws(StackError) -> ReceivedDatagram {
        guard !endpoint.isClosed else { throw .closed }
        if let error = endpoint.pendingError {
            endpoint.pendingError = nil
            throw error
        }
        guard let datagram = endpoint.receiveQueue.pop() else { throw .wouldBlock }
        endpoint.queuedBytes -= datagram.payload.count
        return datagram
    }

    /// Closes `endpoint`: frees its port, drops its queue, signals `.closed`.
    public func close(_ endpoint: UDPEndpoint) {
        guard !endpoint.isClosed else { return }
        if endpoint.localPort != 0, udpEndpoints[endpoint.localPort] === endpoint {
            udpEndpoints[endpoint.localPort] = nil
        }
        endpoint.isClosed = true
        endpoint.receiveQueue.removeAll()
        endpoint.queuedBytes = 0
        endpoint.onEvent?(.closed)
        endpoint.onEvent = nil
    }
}
