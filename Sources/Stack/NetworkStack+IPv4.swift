import SocketAPI
import Wire

// IPv4 input (RFC 791, RFC 1122 3.2.1), reassembly, and output with routing
// and fragmentation.
extension NetworkStack {
    func receiveIPv4(_ bytes: UnsafeRawBufferPointer, linkBroadcast: Bool, now: StackInstant) {
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
        guard packet.isFragment else { return deliver(packet, linkBroadcast: linkBroadcast, now: now) }

        count(.ipv4RxFragments)
        var evicted = 0
        let fragment = ReassemblyTable<IPv4Header>.Fragment(
            key: .init(source: IPv6Address(mapping: packet.source), destination: IPv6Address(mapping: packet.destination),
                       identification: UInt32(packet.identification), proto: packet.proto.rawValue),
            offset: packet.fragmentOffset, data: packet.payload, moreFragments: packet.moreFragments,
            headerLength: packet.headerLength)
        let quotable = shouldSendICMPError(about: packet, linkBroadcast: linkBroadcast)
        let outcome = reassembly.insert(fragment, header: { try? IPv4Header(packet) },
                                        quote: { quotable ? Array(packet.packet.prefix(packet.headerLength + 8)) : nil },
                                        now: now, evicted: &evicted)
        for _ in 0..<evicted { drop(.ipv4DropReassemblyEvicted) }
        switch outcome {
        case .stored:
            if let deadline = nextReassemblyDeadline { schedule(deadline) }
        case .dropped(let failure):
            drop(Self.ipv4Counter(for: failure))
        case .complete(var header, let payload):
            count(.ipv4Reassembled)
            // The first fragment's fields (options dropped), now whole.
            header.payloadLength = payload.count
            header.moreFragments = false
            header.fragmentOffset = 0
            var whole = [UInt8](repeating: 0, count: IPv4Header.length)
            whole += payload
            whole.withUnsafeMutableBytes { header.emit(into: $0) }
            whole.withUnsafeBytes { buffer in
                guard let reassembled = try? IPv4PacketView(buffer) else { return }
                deliver(reassembled, linkBroadcast: linkBroadcast, now: now)
            }
        }
    }

    static func ipv4Counter(for failure: ReassemblyTable<IPv4Header>.Failure) -> StackCounter {
        switch failure {
        case .badLength: .ipv4DropFragmentBadLength
        case .oversize: .ipv4DropReassemblyOversize
        case .inconsistent: .ipv4DropFragmentInconsistent
        case .duplicate: .ipv4DropFragmentDuplicate
        case .overlap: .ipv4DropReassemblyOverlap
        case .noRoom: .ipv4DropReassemblyNoRoom
        }
    }

    /// Hands a whole datagram to its transport protocol.
    func deliver(_ packet: IPv4PacketView, linkBroadcast: Bool, now: StackInstant) {
        count(.ipv4RxDelivered)
        switch packet.proto {
        case .icmp: receiveICMP(packet, now: now)
        case .udp: receiveUDP(packet, linkBroadcast: linkBroadcast, now: now)
        case .igmp: receiveIGMP(packet, now: now)
        default:
            drop(.ipv4DropUnknownProtocol)
            // RFC 1122 3.2.2.1: a host SHOULD say it does not speak the protocol.
            sendICMPError(type: ICMPv4Type.destinationUnreachable, code: ICMPv4UnreachableCode.proto,
                          about: packet, linkBroadcast: linkBroadcast, now: now)
        }
    }

    /// RFC 1122 3.2.1.3: a host accepts its own address and the broadcast
    /// addresses of its subnet; it does not forward anything else.
    func isAddressedToUs(_ destination: IPv4Address) -> Bool {
        destination == address || isBroadcast(destination) || (destination.isMulticast && receivesMulticast(destination))
    }

    /// The limited broadcast or our subnet's directed broadcast.
    func isBroadcast(_ destination: IPv4Address) -> Bool {
        destination.isLimitedBroadcast || destination == subnetBroadcast
    }

    /// RFC 1122 3.2.1.3: a source may not be broadcast, multicast, loopback,
    /// reserved or our own address; 0.0.0.0 only towards a broadcast (BOOTP/DHCP).
    /// Our own address as source is a martian from the link, but not on a
    /// datagram we looped back to ourselves.
    func isAcceptableSource(_ source: IPv4Address, destination: IPv4Address) -> Bool {
        if source.isUnspecified { return destination.isLimitedBroadcast }
        return !source.isLimitedBroadcast && !source.isMulticast && !source.isLoopback && !source.isReserved
            && (source != address || deliveringLoopedBack) && source != subnetBroadcast
    }

    /// Where to send a packet for `destination`: the next hop, and whether it
    /// is a link-level broadcast. On-link destinations go direct, others to
    /// the default gateway.
    /// - Throws: `.networkUnreachable` when off-link with no gateway.
    func route(to destination: IPv4Address) throws(SocketError) -> (nextHop: IPv4Address, broadcast: Bool) {
        if isBroadcast(destination) { return (destination, true) }
        // Multicast goes onto the link to the group's MAC (RFC 1112 6.4).
        if destination.isMulticast { return (destination, false) }
        if destination.isLoopback || destination.isUnspecified || destination.isReserved {
            throw .networkUnreachable
        }
        if configuration.interface.contains(destination) { return (destination, false) }
        if let gateway = configuration.gateway { return (gateway, false) }
        throw .networkUnreachable
    }

    /// Sends one IPv4 datagram carrying `payloadLength` bytes that `fill` writes.
    ///
    /// When it fits the MTU and the next hop's MAC is known, the frame is
    /// built in place in the sink's buffer. Otherwise the payload is built
    /// aside, then fragmented (RFC 791) and/or parked until ARP resolves.
    /// `fill` is told whether to leave the transport checksum partial: only
    /// in place, when the sink completes checksums and the protocol's
    /// checksum sits at `transportChecksumOffset` of the payload.
    /// - Throws: `.networkUnreachable`; `.messageTooLong` (over 65535 bytes,
    ///   or over the MTU with `dontFragment`); `.wouldBlock` when the link
    ///   has no room now (nothing was sent).
    func sendIPv4(proto: IPProtocol, to destination: IPv4Address, payloadLength: Int, typeOfService: UInt8 = 0,
                  timeToLive: UInt8 = 64, dontFragment: Bool = false, owner: UDPEndpoint? = nil, transportChecksumOffset: Int? = nil,
                  now: StackInstant, fill: (UnsafeMutableRawBufferPointer, _ partialChecksum: Bool) -> Void) throws(SocketError) {
        if destination == address {
            return loopBack(proto: proto, to: destination, payloadLength: payloadLength, typeOfService: typeOfService,
                            timeToLive: timeToLive, now: now, fill: fill)
        }
        let (nextHop, broadcast) = try route(to: destination)
        let packetLength = IPv4Header.length + payloadLength
        guard packetLength <= 0xFFFF, packetLength <= configuration.mtu || !dontFragment else {
            count(.ipv4TxDropTooBig)
            throw .messageTooLong
        }
        var header = IPv4Header(typeOfService: typeOfService, payloadLength: payloadLength, identification: 0,
                                dontFragment: dontFragment, ttl: timeToLive, proto: proto, source: address, destination: destination)
        let destinationMAC = destination.isMulticast ? destination.multicastMAC
            : broadcast ? MACAddress.broadcast : resolvedMAC(for: nextHop, now: now)
        // An application's datagram leaves the reserve to the stack's own frames.
        let reserve = owner == nil ? 0 : configuration.transmitReserveFrames

        if packetLength <= configuration.mtu, let destinationMAC {
            guard sink.hasRoom(for: 1 + reserve) else { throw .wouldBlock }
            header.identification = takeIdentification()
            transmitInPlace(to: destinationMAC, etherType: .ipv4, headerLength: IPv4Header.length, packetLength: packetLength,
                            transportChecksumOffset: transportChecksumOffset, emitHeader: { header.emit(into: $0) }, fill: fill)
            count(.ipv4TxPackets)
            return
        }

        var payload = [UInt8](repeating: 0, count: payloadLength)
        payload.withUnsafeMutableBytes { fill($0, false) }
        if let destinationMAC {
            guard sink.hasRoom(for: fragmentCount(payloadLength) + reserve) else { throw .wouldBlock }
            header.identification = takeIdentification()
            transmitIPv4(header, payload: payload, to: destinationMAC)
        } else {
            header.identification = takeIdentification()
            parkForResolution(ParkedPacket(header: header, payload: payload, owner: owner), nextHop: nextHop, now: now)
        }
    }

    /// Largest payload per fragment: the MTU less the header, in 8-byte units.
    var fragmentPayloadSize: Int { (configuration.mtu - IPv4Header.length) & ~7 }

    /// Frames needed to carry `payloadLength` bytes of IP payload.
    func fragmentCount(_ payloadLength: Int) -> Int {
        IPv4Header.length + payloadLength <= configuration.mtu
            ? 1 : (payloadLength + fragmentPayloadSize - 1) / fragmentPayloadSize
    }

    /// Sends a datagram to a resolved MAC, fragmenting it when it exceeds the
    /// MTU (RFC 791 3.2): every fragment but the last carries a multiple of 8
    /// bytes, all share the identification, MF is set on all but the last.
    /// Frames the link cannot take are dropped and counted; callers that must
    /// not lose them check `sink.hasRoom(for:)` first.
    func transmitIPv4(_ header: IPv4Header, payload: [UInt8], to destinationMAC: MACAddress) {
        let chunk = IPv4Header.length + payload.count <= configuration.mtu ? max(payload.count, 1) : fragmentPayloadSize
        let fragmented = payload.count > chunk
        var offset = 0
        repeat {
            let length = min(chunk, payload.count - offset)
            var fragmentHeader = header
            fragmentHeader.payloadLength = length
            fragmentHeader.fragmentOffset = header.fragmentOffset + offset
            fragmentHeader.moreFragments = header.moreFragments || offset + length < payload.count
            let sent = transmitFrame { frame in
                EthernetHeader(destination: destinationMAC, source: mac, etherType: .ipv4).emit(into: frame)
                let ip = UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length...])
                fragmentHeader.emit(into: ip)
                if length > 0 {
                    payload.withUnsafeBytes { bytes in
                        UnsafeMutableRawBufferPointer(rebasing: ip[IPv4Header.length..<(IPv4Header.length + length)])
                            .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)]))
                    }
                }
                return EthernetHeader.length + IPv4Header.length + length
            }
            if !sent { return drop(.ethernetTxDropLinkFull) }
            if fragmented { count(.ipv4TxFragments) }
            offset += length
        } while offset < payload.count
        if fragmented { count(.ipv4TxFragmented) }
        count(.ipv4TxPackets)
    }

    /// A fresh IP identification per datagram (RFC 791; RFC 6864 asks only
    /// for uniqueness per source/destination/protocol within the MSL).
    func takeIdentification() -> UInt16 {
        defer { nextIdentification &+= 1 }
        return nextIdentification
    }

    /// Gives up on reassemblies past their deadline; RFC 792 / RFC 1122
    /// 3.2.2.4: time exceeded (code 1) when the first fragment had arrived.
    func runReassemblyTimers(now: StackInstant) {
        for expired in reassembly.expire(now: now) {
            drop(.ipv4DropReassemblyTimeout)
            guard let quote = expired.quote, let source = expired.source.mappedIPv4 else { continue }
            quote.withUnsafeBytes { bytes in
                sendICMPError(type: ICMPv4Type.timeExceeded, code: 1, quoting: bytes, to: source, now: now)
            }
        }
        runIPv6ReassemblyTimers(now: now)
        if let deadline = nextReassemblyDeadline { schedule(deadline) }
    }
}

extension NetworkStack {
    /// A datagram to the stack's own address never goes on the link: it is
    /// delivered here, as Linux does through its loopback (RFC 1122 3.3.1.1
    /// has a host's own addresses routed internally). Queued and received
    /// after the current one, so an answer to it (an ICMP error to ourselves)
    /// does not recurse.
    func loopBack(proto: IPProtocol, to destination: IPv4Address, payloadLength: Int, typeOfService: UInt8,
                  timeToLive: UInt8, now: StackInstant, fill: (UnsafeMutableRawBufferPointer, _ partialChecksum: Bool) -> Void) {
        let header = IPv4Header(typeOfService: typeOfService, payloadLength: payloadLength, identification: takeIdentification(),
                                ttl: timeToLive, proto: proto, source: address, destination: destination)
        var packet = [UInt8](repeating: 0, count: IPv4Header.length + payloadLength)
        packet.withUnsafeMutableBytes { ip in
            fill(UnsafeMutableRawBufferPointer(rebasing: ip[IPv4Header.length...]), false)
            header.emit(into: ip)
        }
        count(.ipv4TxPackets)
        count(.ipv4TxLoopedBack)
        loopBack(packet, etherType: .ipv4, now: now)
    }

    /// Receives a packet we sent ourselves, in a frame from our MAC to our
    /// MAC, after the frame being handled (either family).
    func loopBack(_ packet: [UInt8], etherType: EtherType, now: StackInstant) {
        var frame = [UInt8](repeating: 0, count: EthernetHeader.length)
        frame.withUnsafeMutableBytes { EthernetHeader(destination: mac, source: mac, etherType: etherType).emit(into: $0) }
        loopedBack.append(frame + packet)
        guard !deliveringLoopedBack else { return }
        deliveringLoopedBack = true
        let (frameBeingHandled, checksumBeingHandled) = (currentFrame, receivedChecksum)
        while !loopedBack.isEmpty {
            let next = loopedBack.removeFirst()
            next.withUnsafeBytes { receive(frame: $0, now: now) }
        }
        (currentFrame, receivedChecksum) = (frameBeingHandled, checksumBeingHandled)
        deliveringLoopedBack = false
    }
}
