import SocketAPI
import Wire

// UDP over IPv6 (RFC 8200 8.1, RFC 768): the checksum is mandatory, the
// port space and demultiplexing rules are IPv4's, and an IPv6 socket takes
// both families unless it is IPv6-only (RFC 3493 5.3).
extension NetworkStack {
    func receiveUDP(_ datagram: IPv6Datagram, now: StackInstant) {
        guard let udp = udpDatagram(in: datagram.payload) else { return }
        guard udp.checksum != 0 else { return drop(.udpDropZeroChecksum) }
        let checksumStart = EthernetHeader.length + datagram.payloadOffset
        guard receivedChecksum.vouches(start: checksumStart, offset: UDPDatagramView.Field.checksum)
                || udp.checksumIsValid(source: datagram.source, destination: datagram.destination) else {
            return drop(.udpDropBadChecksum)
        }
        if datagram.destination.isMulticast {
            // Never answered with an ICMPv6 error (RFC 4443 2.4 e.3).
            guard deliverMulticast(udp, from: datagram, now: now) else { return drop(.udpDropMulticastNoMember) }
            return count(.udpRxMulticastDelivered)
        }
        guard let endpoint = bestEndpoint(for: udp, from: datagram) else {
            drop(.udpDropNoPort)
            // RFC 4443 3.1: port unreachable for a port nobody listens on.
            return sendICMPv6Error(type: ICMPv6Type.destinationUnreachable, code: ICMPv6Type.UnreachableCode.port,
                                   info: 0, about: datagram, now: now)
        }
        enqueue(udp, from: datagram, on: endpoint, now: now)
    }

    /// Queues a datagram on a socket, within its bounds (as for IPv4).
    func enqueue(_ udp: UDPDatagramView, from datagram: IPv6Datagram, on endpoint: UDPEndpoint, now: StackInstant) {
        var info = DatagramInfo(source: .any, sourcePort: udp.sourcePort, destination: .any, length: udp.payload.count,
                                timeToLive: datagram.hopLimit, typeOfService: datagram.trafficClass, receivedAt: now)
        info.source6 = datagram.source
        info.destination6 = datagram.destination
        enqueue(udp.payload, info: info, on: endpoint)
    }

    /// As for IPv4: a socket connected to this peer, then one bound to this
    /// destination, then a wildcard one; IPv6 sockets only.
    func bestEndpoint(for udp: UDPDatagramView, from datagram: IPv6Datagram) -> UDPEndpoint? {
        var best: UDPEndpoint?
        var bestScore = -1
        for endpoint in udpEndpoints[udp.destinationPort] ?? [] where endpoint.family == .ipv6 && endpoint.remote == nil {
            if !endpoint.localAddress6.isUnspecified && endpoint.localAddress6 != datagram.destination { continue }
            if let remote = endpoint.remote6, remote.address != datagram.source || remote.port != udp.sourcePort { continue }
            let score = (endpoint.remote6 != nil ? 2 : 0) + (endpoint.localAddress6.isUnspecified ? 0 : 1)
            if score > bestScore {
                best = endpoint
                bestScore = score
            }
        }
        return best
    }

    // MARK: Socket operations by socket address (either family)

    /// Binds to `address` (IPv4 or IPv6, ours or unspecified) and its port (0: ephemeral).
    /// - Throws: as `bind(_:address:port:)`; `.invalidArgument` for an IPv6
    ///   address on an IPv4 socket.
    public func bind(_ endpoint: UDPEndpoint, to address: SocketAddress) throws(SocketError) {
        guard let requested = address.ipv6 else {
            // An IPv6-only socket takes no IPv4 address; an IPv4 one on a dual socket makes it IPv4 in effect.
            guard endpoint.family == .ipv4 || !endpoint.v6Only || address.address.isUnspecified else { throw .addressNotAvailable }
            return try bind(endpoint, address: address.address, port: address.port)
        }
        guard !endpoint.isClosed else { throw .closed }
        guard endpoint.family == .ipv6 else { throw .invalidArgument }
        guard endpoint.localPort == 0 else { throw .invalidArgument }
        guard requested.isUnspecified || ipv6AddressStates[requested] == .preferred || endpoint.freeBind else {
            throw .addressNotAvailable
        }
        endpoint.localAddress6 = requested
        let chosen: UInt16
        do throws(SocketError) {
            if address.port == 0 {
                chosen = try allocateEphemeralPort()
            } else {
                try checkPortFree(address.port, for: endpoint)
                chosen = address.port
            }
        } catch {
            endpoint.localAddress6 = .unspecified
            throw error
        }
        endpoint.localPort = chosen
        udpEndpoints[chosen, default: []].append(endpoint)
    }

    /// Connects to `peer` (either family; an unspecified address disconnects).
    public func connect(_ endpoint: UDPEndpoint, to peer: SocketAddress, now: StackInstant) throws(SocketError) {
        guard let destination = peer.ipv6 else {
            guard endpoint.family == .ipv4 || peer.address.isUnspecified || (!endpoint.v6Only && endpoint.localAddress6.isUnspecified) else {
                throw .networkUnreachable
            }
            endpoint.remote6 = nil
            return try connect(endpoint, to: peer.address, port: peer.port)
        }
        guard !endpoint.isClosed else { throw .closed }
        guard endpoint.family == .ipv6 else { throw .invalidArgument }
        if destination.isUnspecified {
            endpoint.remote6 = nil
            endpoint.remote = nil
            endpointsVersion &+= 1
            return
        }
        guard peer.port != 0 else { throw .invalidArgument }
        guard nextHop(for: destination, now: now) != nil || isOurIPv6Address(destination) else { throw .networkUnreachable }
        if endpoint.localPort == 0 { try bind(endpoint, to: SocketAddress(IPv6Address.unspecified, 0)) }
        endpoint.remote = nil
        endpoint.remote6 = (destination, peer.port)
        endpoint.pendingError = nil
        endpointsVersion &+= 1
    }

    /// Sends to `destination` (either family); see `send(_:from:to:options:now:)` for the peer.
    public func send(_ payload: UnsafeRawBufferPointer, from endpoint: UDPEndpoint, to destination: SocketAddress,
                     options: DatagramSendOptions = DatagramSendOptions(), now: StackInstant) throws(SocketError) {
        guard let target = destination.ipv6 else {
            guard endpoint.family == .ipv4 || !endpoint.v6Only else { throw .networkUnreachable }
            return try send(payload, from: endpoint, to: (destination.address, destination.port), options: options, now: now)
        }
        guard !endpoint.isClosed else { throw .closed }
        if let error = endpoint.pendingError {
            endpoint.pendingError = nil
            throw error
        }
        try sendIPv6(payload, from: endpoint, to: (target, destination.port), options: options, now: now)
    }

    /// One datagram over IPv6: the hop limit is the socket's TTL (or the
    /// multicast one), the traffic class its TOS.
    func sendIPv6(_ payload: UnsafeRawBufferPointer, from endpoint: UDPEndpoint, to destination: (address: IPv6Address, port: UInt16),
                  options: DatagramSendOptions, now: StackInstant) throws(SocketError) {
        guard endpoint.family == .ipv6 else { throw .invalidArgument }
        guard destination.port != 0, !destination.address.isUnspecified else { throw .invalidArgument }
        guard UDPHeader.length + payload.count <= 0xFFFF else { throw .messageTooLong }
        if endpoint.localPort == 0 { try bind(endpoint, to: SocketAddress(IPv6Address.unspecified, 0)) }
        if let requested = options.source6, !requested.isUnspecified, !isOurIPv6Address(requested) { throw .invalidArgument }
        let chosen = options.source6.flatMap { $0.isUnspecified ? nil : $0 } ?? endpoint.localAddress6
        let source = chosen.isUnspecified ? sourceAddress(for: destination.address) : chosen
        guard let source else { throw .networkUnreachable }
        let header = UDPHeader(sourcePort: endpoint.localPort, destinationPort: destination.port, payloadLength: payload.count)
        func fill(_ buffer: UnsafeMutableRawBufferPointer, _ partialChecksum: Bool) {
            if payload.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: buffer[UDPHeader.length...]).copyMemory(from: payload)
            }
            if partialChecksum {
                header.emitPartial(intoDatagram: buffer, source: source, destination: destination.address)
            } else {
                header.emit(intoDatagram: buffer, source: source, destination: destination.address)
            }
        }
        let multicast = destination.address.isMulticast
        let hopLimit = options.timeToLive ?? (multicast ? endpoint.multicastTimeToLive : endpoint.timeToLive)
        let trafficClass = options.typeOfService ?? endpoint.typeOfService
        try countingSend(from: endpoint) { () throws(SocketError) in
            try sendIPv6(nextHeader: IPv6NextHeader.udp, from: source, to: destination.address,
                         payloadLength: UDPHeader.length + payload.count, hopLimit: hopLimit,
                         trafficClass: trafficClass, owner: endpoint,
                         transportChecksumOffset: UDPDatagramView.Field.checksum, now: now, fill: fill)
        }
        // IPV6_MULTICAST_LOOP: our own sockets in the group hear it too, as on Linux.
        if multicast && endpoint.multicastLoop && ipv6GroupMembers[destination.address] != nil {
            var datagram = [UInt8](repeating: 0, count: UDPHeader.length + payload.count)
            datagram.withUnsafeMutableBytes { fill($0, false) }
            let header = IPv6Header(payloadLength: datagram.count, nextHeader: IPv6NextHeader.udp, hopLimit: hopLimit,
                                    trafficClass: trafficClass, source: source, destination: destination.address)
            count(.udpTxMulticastLoopedBack)
            loopBack(header.packet(with: datagram), etherType: .ipv6, now: now)
        }
    }
}
