import Wire

// IPv4 input (RFC 791, RFC 1122 3.2.1) and output with routing.
extension NetworkStack {
    func receiveIPv4(_ bytes: UnsafeRawBufferPointer, now: StackInstant) {
        count(.ipv4RxPackets)
        let packet: IPv4PacketView
        do {
            packet = try IPv4PacketView(bytes)
        } catch {
            switch error {
            case .badVersion: return drop(.ipv4DropBadVersion)
            case .badHeaderLength: return drop(.ipv4DropBadHeaderLength)
            case .badLength: return drop(.ipv4DropBadLength)
            default: return drop(.ipv4DropTruncated)
            }
        }
        guard packet.checksumIsValid else { return drop(.ipv4DropBadChecksum) }
        guard isAddressedToUs(packet.destination) else { return drop(.ipv4DropNotForUs) }
        guard isAcceptableSource(packet.source, destination: packet.destination) else { return drop(.ipv4DropBadSource) }
        guard !packet.isFragment else { return drop(.ipv4DropFragment) }
        count(.ipv4RxDelivered)
        switch packet.proto {
        case .icmp: receiveICMP(packet, now: now)
        case .udp: receiveUDP(packet, now: now)
        default: drop(.ipv4DropUnknownProtocol)
        }
    }

    /// RFC 1122 3.2.1.3: a host accepts its own address and the broadcast
    /// addresses of its subnet; it does not forward anything else.
    func isAddressedToUs(_ destination: IPv4Address) -> Bool {
        destination == address || destination.isLimitedBroadcast
            || destination == configuration.interface.subnetBroadcast
    }

    /// RFC 1122 3.2.1.3: a source may not be broadcast, multicast, loopback,
    /// reserved or our own address; 0.0.0.0 only towards a broadcast (BOOTP/DHCP).
    func isAcceptableSource(_ source: IPv4Address, destination: IPv4Address) -> Bool {
        if source.isUnspecified { return destination.isLimitedBroadcast }
        return !source.isLimitedBroadcast && !source.isMulticast && !source.isLoopback && !source.isReserved
            && source != address && source != configuration.interface.subnetBroadcast
    }

    /// Where to send a packet for `destination`: the next hop, and whether it
    /// is a link-level broadcast.
    /// - Throws: `.networkUnreachable` when off-link with no gateway.
    func route(to destination: IPv4Address) throws(StackError) -> (nextHop: IPv4Address, broadcast: Bool) {
        let interface = configuration.interface
        if destination.isLimitedBroadcast || destination == interface.subnetBroadcast { return (destination, true) }
        if interface.contains(destination) { return (destination, false) }
        if let gateway = configuration.gateway { return (gateway, false) }
        throw .networkUnreachable
    }

    /// Sends one IPv4 packet carrying `payloadLength` bytes that `fill` writes.
    ///
    /// The frame is built in place in the sink's buffer when the next hop's
    /// MAC is known; otherwise the packet is parked until ARP resolves it.
    /// - Throws: `.networkUnreachable`, `.messageTooLong`, or `.wouldBlock`
    ///   when the link has no room now (nothing was sent).
    func sendIPv4(proto: IPProtocol, to destination: IPv4Address, payloadLength: Int, typeOfService: UInt8 = 0,
                  owner: UDPEndpoint? = nil, now: StackInstant,
                  fill: (UnsafeMutableRawBufferPointer) -> Void) throws(StackError) {
        let (nextHop, broadcast) = try route(to: destination)
        guard IPv4Header.length + payloadLength <= configuration.mtu else {
            count(.ipv4TxDropTooBig)
            throw .messageTooLong
        }
        let header = IPv4Header(typeOfService: typeOfService, payloadLength: payloadLength,
                                identification: takeIdentification(), proto: proto,
                                source: address, destination: destination)
        let packetLength = IPv4Header.length + payloadLength
        let destinationMAC = broadcast ? MACAddress.broadcast : resolvedMAC(for: nextHop, now: now)
        guard let destinationMAC else {
            var packet = [UInt8](repeating: 0, count: packetLength)
            packet.withUnsafeMutableBytes { buffer in
                fill(UnsafeMutableRawBufferPointer(rebasing: buffer[IPv4Header.length...]))
                header.emit(into: buffer)
            }
            parkForResolution(packet, owner: owner, nextHop: nextHop, now: now)
            return
        }
        let sent = transmitFrame { frame in
            EthernetHeader(destination: destinationMAC, source: mac, etherType: .ipv4).emit(into: frame)
            let ip = UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length..<(EthernetHeader.length + packetLength)])
            fill(UnsafeMutableRawBufferPointer(rebasing: ip[IPv4Header.length...]))
            header.emit(into: ip)
            return EthernetHeader.length + packetLength
        }
        guard sent else { throw .wouldBlock }
        count(.ipv4TxPackets)
    }

    /// A fresh IP identification per datagram (RFC 791; RFC 6864 asks only
    /// for uniqueness per source/destination/protocol within the MSL).
    func takeIdentification() -> UInt16 {
        defer { nextIdentification &+= 1 }
        return nextIdentification
    }
}
