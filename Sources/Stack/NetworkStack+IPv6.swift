import SocketAPI
import Wire

/// Where an IPv6 address of the stack stands (RFC 4862 5.4).
public enum IPv6AddressState: Equatable, Sendable {
    /// Duplicate address detection runs: solicitations left to send, and when the next step is due.
    case tentative(probesLeft: Int, nextAt: StackInstant)
    /// In use.
    case preferred
    /// Another node holds it: never used (a log line and `ipv6.dad_conflicts` say so).
    case duplicate
}

/// An IPv6 packet as the layers above the extension headers see it.
struct IPv6Datagram {
    /// The whole packet from its IPv6 header (what an ICMPv6 error quotes).
    var packet: UnsafeRawBufferPointer
    var source: IPv6Address
    var destination: IPv6Address
    var hopLimit: UInt8
    var trafficClass: UInt8
    /// The upper-layer header and data.
    var payload: UnsafeRawBufferPointer
    /// Where `payload` starts in `packet`.
    var payloadOffset: Int
    /// Sent to a link-layer multicast or broadcast address.
    var linkMulticast: Bool
}

// IPv6 (RFC 8200): input through the extension headers and reassembly,
// output with source selection, next-hop choice, fragmentation and the path
// MTU. No forwarding. Neighbour discovery is in +NDP, ICMPv6 in +ICMPv6.
extension NetworkStack {
    /// The stack's link-local address (fe80:: and the MAC's modified EUI-64).
    public var linkLocalAddress: IPv6Address { IPv6Address.linkLocal(from: mac) }

    /// Addresses in use (preferred).
    public var ipv6Addresses: [IPv6Address] {
        ipv6AddressStates.filter { $0.value == .preferred }.keys.sorted { ($0.high, $0.low) < ($1.high, $1.low) }
    }

    func isOurIPv6Address(_ address: IPv6Address) -> Bool { ipv6AddressStates[address] == .preferred }

    /// The IPv6 multicast MACs the stack listens on: all-nodes and its addresses' solicited-node groups.
    func acceptsIPv6Multicast(_ destination: MACAddress) -> Bool {
        destination == IPv6Address.allNodes.multicastMAC || ipv6MulticastMACs.contains(destination)
            || ipv6AddressStates.keys.contains { $0.solicitedNode.multicastMAC == destination }
    }

    func receiveIPv6(_ bytes: UnsafeRawBufferPointer, linkMulticast: Bool, now: StackInstant) {
        count(.ipv6RxPackets)
        let packet: IPv6PacketView
        do { packet = try IPv6PacketView(bytes) } catch {
            switch error {
            case .badVersion: return drop(.ipv6DropBadVersion)
            default: return drop(.ipv6DropTruncated)
            }
        }
        guard !packet.source.isMulticast else { return drop(.ipv6DropBadSource) }
        let destination = packet.destination
        guard ipv6AddressStates[destination] != nil || destination == .allNodes || ipv6GroupMembers[destination] != nil
                || ipv6AddressStates.keys.contains(where: { $0.solicitedNode == destination }) else {
            return drop(.ipv6DropNotForUs)
        }
        processHeaders(packet, linkMulticast: linkMulticast, now: now)
    }

    /// Walks the extension headers in order (RFC 8200 4.1) to the upper
    /// layer: options obeyed by their type's high bits, a routing header with
    /// segments left refused (we do not forward), fragments reassembled.
    func processHeaders(_ packet: IPv6PacketView, linkMulticast: Bool, now: StackInstant) {
        let bytes = packet.packet
        var next = packet.nextHeader
        var offset = IPv6PacketView.headerLength
        // Where the field naming `next` sits, for a parameter problem's pointer.
        var nextField = IPv6PacketView.Field.nextHeader
        func datagram() -> IPv6Datagram {
            IPv6Datagram(packet: bytes, source: packet.source, destination: packet.destination, hopLimit: packet.hopLimit,
                         trafficClass: packet.trafficClass, payload: UnsafeRawBufferPointer(rebasing: bytes[offset...]),
                         payloadOffset: offset, linkMulticast: linkMulticast)
        }
        func problem(_ code: UInt8, pointer: Int, _ reason: StackCounter, evenToMulticast: Bool = false) {
            drop(reason)
            sendICMPv6Error(type: ICMPv6Type.parameterProblem, code: code, info: UInt32(pointer), about: datagram(),
                            evenToMulticast: evenToMulticast, now: now)
        }
        while true {
            switch next {
            case IPv6NextHeader.hopByHopOptions, IPv6NextHeader.destinationOptions:
                // Hop-by-hop may only come first (RFC 8200 4.3): elsewhere it is an unknown next header.
                if next == IPv6NextHeader.hopByHopOptions && offset != IPv6PacketView.headerLength {
                    return problem(ICMPv6Type.ParameterProblemCode.unrecognizedNextHeader, pointer: nextField, .ipv6DropBadExtensionHeader)
                }
                guard offset + 2 <= bytes.count else { return drop(.ipv6DropBadExtensionHeader) }
                let end = offset + (Int(bytes[offset + 1]) + 1) * 8
                guard end <= bytes.count else { return drop(.ipv6DropBadExtensionHeader) }
                var option = offset + 2
                while option < end {
                    let type = bytes[option]
                    if type == IPv6Option.pad1 { option += 1; continue }
                    guard option + 2 <= end, option + 2 + Int(bytes[option + 1]) <= end else {
                        return drop(.ipv6DropBadExtensionHeader)
                    }
                    if type != IPv6Option.padN {
                        switch IPv6Option.UnrecognizedAction(optionType: type) {
                        case .skip: break
                        case .discard: return drop(.ipv6DropUnknownOption)
                        case .discardAndReport:
                            return problem(ICMPv6Type.ParameterProblemCode.unrecognizedOption, pointer: option,
                                           .ipv6DropUnknownOption, evenToMulticast: true)
                        case .discardAndReportUnlessMulticast:
                            if packet.destination.isMulticast { return drop(.ipv6DropUnknownOption) }
                            return problem(ICMPv6Type.ParameterProblemCode.unrecognizedOption, pointer: option, .ipv6DropUnknownOption)
                        }
                    }
                    option += 2 + Int(bytes[option + 1])
                }
                nextField = offset
                next = bytes[offset]
                offset = end
            case IPv6NextHeader.routing:
                guard offset + 8 <= bytes.count else { return drop(.ipv6DropBadExtensionHeader) }
                let end = offset + (Int(bytes[offset + 1]) + 1) * 8
                guard end <= bytes.count else { return drop(.ipv6DropBadExtensionHeader) }
                // RFC 8200 4.4: with no segments left the header is skipped;
                // otherwise the packet is for someone else, and a host that
                // does not route points at the routing type it will not process.
                guard bytes[offset + 3] == 0 else {
                    return problem(ICMPv6Type.ParameterProblemCode.erroneousHeaderField, pointer: offset + 2, .ipv6DropRoutingHeader)
                }
                nextField = offset
                next = bytes[offset]
                offset = end
            case IPv6NextHeader.fragment:
                guard let fragment = IPv6FragmentHeader(reading: bytes, at: offset) else { return drop(.ipv6DropBadExtensionHeader) }
                count(.ipv6RxFragments)
                // An atomic fragment (offset 0, no more) is processed on its own (RFC 6946).
                if fragment.offset == 0 && !fragment.moreFragments {
                    nextField = offset
                    next = fragment.nextHeader
                    offset += IPv6FragmentHeader.length
                    continue
                }
                let data = UnsafeRawBufferPointer(rebasing: bytes[(offset + IPv6FragmentHeader.length)...])
                // RFC 8200 4.5: a non-final fragment not a multiple of 8 bytes, or one
                // reaching past 65 535, earns a parameter problem pointing at the culprit.
                if fragment.moreFragments && (data.isEmpty || data.count % 8 != 0) {
                    return problem(ICMPv6Type.ParameterProblemCode.erroneousHeaderField,
                                   pointer: IPv6PacketView.Field.payloadLength, .ipv6DropFragmentBadLength)
                }
                let unfragmentableExtensions = offset - IPv6PacketView.headerLength
                if fragment.offset + data.count + unfragmentableExtensions > 0xFFFF {
                    return problem(ICMPv6Type.ParameterProblemCode.erroneousHeaderField, pointer: offset + 2, .ipv6DropReassemblyOversize)
                }
                return reassemble(fragment, data: data, packet: packet, headerEnd: offset, nextField: nextField,
                                  quotable: shouldSendICMPv6Error(about: datagram(), evenToMulticast: false),
                                  linkMulticast: linkMulticast, now: now)
            case IPv6NextHeader.icmpv6:
                count(.ipv6RxDelivered)
                return receiveICMPv6(datagram(), now: now)
            case IPv6NextHeader.udp:
                count(.ipv6RxDelivered)
                return receiveUDP(datagram(), now: now)
            case IPv6NextHeader.noNextHeader:
                return drop(.ipv6DropNoNextHeader)
            default:
                return problem(ICMPv6Type.ParameterProblemCode.unrecognizedNextHeader, pointer: nextField, .ipv6DropUnsupportedNextHeader)
            }
        }
    }

    /// Adds a fragment (RFC 8200 4.5, RFC 5722); a complete datagram is the
    /// first fragment's unfragmentable part, its last next-header field set
    /// to the fragment header's, then the data: processed from the start.
    func reassemble(_ fragment: IPv6FragmentHeader, data: UnsafeRawBufferPointer, packet: IPv6PacketView, headerEnd: Int,
                    nextField: Int, quotable: Bool, linkMulticast: Bool, now: StackInstant) {
        let bytes = packet.packet
        let piece = ReassemblyTable<[UInt8]>.Fragment(
            key: .init(source: packet.source, destination: packet.destination, identification: fragment.identification, proto: 0),
            offset: fragment.offset, data: data, moreFragments: fragment.moreFragments,
            headerLength: headerEnd - IPv6PacketView.headerLength)
        var evicted = 0
        let outcome = reassembly6.insert(piece, header: {
            var unfragmentable = Array(bytes[0..<headerEnd])
            unfragmentable[nextField] = fragment.nextHeader
            return unfragmentable
        }, quote: {
            // RFC 4443 2.4 c: as much of the invoking packet as fits in the minimum MTU.
            quotable ? Array(bytes.prefix(Self.ipv6MinimumMTU - IPv6Header.length - 8)) : nil
        }, now: now, evicted: &evicted)
        for _ in 0..<evicted { drop(.ipv6DropReassemblyEvicted) }
        switch outcome {
        case .stored:
            if let deadline = nextReassemblyDeadline { schedule(deadline) }
        case .dropped(let failure):
            switch failure {
            case .badLength: drop(.ipv6DropFragmentBadLength)
            case .oversize: drop(.ipv6DropReassemblyOversize)
            case .inconsistent: drop(.ipv6DropFragmentInconsistent)
            case .duplicate: drop(.ipv6DropFragmentDuplicate)
            case .overlap: drop(.ipv6DropReassemblyOverlap)
            case .noRoom: drop(.ipv6DropReassemblyNoRoom)
            }
        case .complete(let unfragmentable, let payload):
            count(.ipv6Reassembled)
            var whole = unfragmentable + payload
            let payloadLength = UInt16(whole.count - IPv6Header.length)
            whole.withUnsafeMutableBytes { $0.setU16(payloadLength, at: IPv6PacketView.Field.payloadLength) }
            whole.withUnsafeBytes { buffer in
                guard let reassembled = try? IPv6PacketView(buffer) else { return }
                processHeaders(reassembled, linkMulticast: linkMulticast, now: now)
            }
        }
    }

    /// Both families' reassembly deadlines, the earlier.
    var nextReassemblyDeadline: StackInstant? {
        [reassembly.nextDeadline, reassembly6.nextDeadline].compactMap { $0 }.min()
    }

    /// RFC 8200 4.5: a datagram not complete within 60 s is discarded; time
    /// exceeded (code 1) only when its first fragment had come.
    func runIPv6ReassemblyTimers(now: StackInstant) {
        for expired in reassembly6.expire(now: now) {
            drop(.ipv6DropReassemblyTimeout)
            guard let quote = expired.quote else { continue }
            quote.withUnsafeBytes { bytes in
                sendICMPv6Error(type: ICMPv6Type.timeExceeded, code: 1, info: 0, quoting: bytes,
                                from: nil, to: expired.source, now: now)
            }
        }
    }

    // MARK: Output

    /// Every IPv6 link carries 1280 bytes (RFC 8200 5).
    static let ipv6MinimumMTU = 1280

    /// The source for `destination` (RFC 6724, simply): the link-local
    /// address for link-local and link-scope multicast destinations, else
    /// the preferred address sharing the longest prefix with it, else the link-local one.
    public func sourceAddress(for destination: IPv6Address) -> IPv6Address? {
        let linkLocal = linkLocalAddress
        let usable = isOurIPv6Address(linkLocal) ? linkLocal : nil
        if destination.isLinkLocal || (destination.isMulticast && destination.high >> 48 & 0xF == 2) { return usable }
        func commonPrefix(_ a: IPv6Address) -> Int {
            let high = (a.high ^ destination.high).leadingZeroBitCount
            return high < 64 ? high : 64 + (a.low ^ destination.low).leadingZeroBitCount
        }
        // A plain loop, not filter/max: this runs per datagram and must not allocate.
        var best: IPv6Address?
        var bestLength = -1
        for (address, state) in ipv6AddressStates where state == .preferred && !address.isLinkLocal {
            let length = commonPrefix(address)
            // Ties go to the lower address, so the choice never depends on hashing.
            if length > bestLength || (length == bestLength && (address.high, address.low) < (best!.high, best!.low)) {
                best = address
                bestLength = length
            }
        }
        return best ?? usable
    }

    /// The next hop for `destination` (RFC 4861 5.2): itself when on-link
    /// (link-local, in an advertised on-link prefix or one of our addresses'
    /// /64), else the default router.
    func nextHop(for destination: IPv6Address, now: StackInstant) -> IPv6Address? {
        if destination.isMulticast || destination.isLinkLocal { return destination }
        if onLinkPrefixes.contains(where: { $0.validUntil > now && destination.hasPrefix($0.prefix, length: $0.length) }) {
            return destination
        }
        if ipv6AddressStates.keys.contains(where: { !$0.isLinkLocal && destination.hasPrefix($0, length: 64) }) { return destination }
        if let router = defaultRouter, router.validUntil > now { return router.address }
        return nil
    }

    /// The MTU towards `destination`: the link's, or less where a packet
    /// too big said so (RFC 8201), never below 1280.
    func pathMTU(to destination: IPv6Address, now: StackInstant) -> Int {
        if let learned = pathMTUs[destination], learned.validUntil > now { return learned.mtu }
        return ipv6LinkMTU ?? configuration.mtu
    }

    /// A fresh fragment identification (RFC 7739 asks that it be hard to
    /// predict; a counter stepped by an odd constant from a MAC-seeded start is
    /// enough here: the stack has no off-link peers to spoof it).
    func takeIPv6Identification() -> UInt32 {
        ipv6Identification &+= 0x9E37_79B9
        return ipv6Identification
    }

    /// Sends one IPv6 packet carrying `payloadLength` bytes of `nextHeader`
    /// that `fill` writes (told whether to leave the transport checksum
    /// partial, as for IPv4). Built in place when it fits the path MTU and the
    /// next hop's MAC is known; otherwise built aside, fragmented (RFC 8200
    /// 4.5) and/or parked until neighbour discovery answers.
    /// - Throws: `.networkUnreachable` (no route, or no address to send
    ///   from); `.messageTooLong` (over 65 535 bytes); `.wouldBlock`.
    func sendIPv6(nextHeader: UInt8, from requestedSource: IPv6Address? = nil, to destination: IPv6Address, payloadLength: Int,
                  hopLimit: UInt8 = 64, trafficClass: UInt8 = 0, owner: UDPEndpoint? = nil, transportChecksumOffset: Int? = nil,
                  now: StackInstant, fill: (UnsafeMutableRawBufferPointer, _ partialChecksum: Bool) -> Void) throws(SocketError) {
        guard payloadLength <= 0xFFFF else { count(.ipv6TxDropNoRoute); throw .messageTooLong }
        guard let source = requestedSource ?? sourceAddress(for: destination) else {
            count(.ipv6TxDropNoRoute)
            throw .networkUnreachable
        }
        let header = IPv6Header(payloadLength: payloadLength, nextHeader: nextHeader, hopLimit: hopLimit,
                                trafficClass: trafficClass, source: source, destination: destination)
        if isOurIPv6Address(destination) {
            var packet = [UInt8](repeating: 0, count: IPv6Header.length + payloadLength)
            packet.withUnsafeMutableBytes { bytes in
                header.emit(into: bytes)
                fill(UnsafeMutableRawBufferPointer(rebasing: bytes[IPv6Header.length...]), false)
            }
            count(.ipv6TxPackets)
            return loopBack(packet, etherType: .ipv6, now: now)
        }
        guard let hop = nextHop(for: destination, now: now) else {
            count(.ipv6TxDropNoRoute)
            throw .networkUnreachable
        }
        let packetLength = IPv6Header.length + payloadLength
        let mtu = pathMTU(to: destination, now: now)
        let destinationMAC = resolvedMAC(forIPv6: hop, now: now)
        let reserve = owner == nil ? 0 : configuration.transmitReserveFrames

        if packetLength <= mtu, let destinationMAC {
            guard sink.hasRoom(for: 1 + reserve) else { throw .wouldBlock }
            transmitInPlace(to: destinationMAC, etherType: .ipv6, headerLength: IPv6Header.length, packetLength: packetLength,
                            transportChecksumOffset: transportChecksumOffset, emitHeader: { header.emit(into: $0) }, fill: fill)
            count(.ipv6TxPackets)
            return
        }

        var payload = [UInt8](repeating: 0, count: payloadLength)
        payload.withUnsafeMutableBytes { fill($0, false) }
        let packets = packetLength <= mtu ? [header.packet(with: payload)] : fragments(of: header, payload: payload, mtu: mtu)
        if packets.count > 1 { count(.ipv6TxFragmented) }
        if let destinationMAC {
            guard sink.hasRoom(for: packets.count + reserve) else { throw .wouldBlock }
            for packet in packets { transmitIPv6(packet, to: destinationMAC) }
        } else {
            for packet in packets { park(packet, for: hop, now: now) }
        }
    }

    /// Splits a datagram into fragments (RFC 8200 4.5): each the header, a
    /// fragment header and a multiple of 8 bytes of data (the last may be
    /// shorter), all with one identification, within `mtu`.
    func fragments(of header: IPv6Header, payload: [UInt8], mtu: Int) -> [[UInt8]] {
        let chunk = (mtu - IPv6Header.length - IPv6FragmentHeader.length) & ~7
        let identification = takeIPv6Identification()
        var packets: [[UInt8]] = []
        var offset = 0
        while offset < payload.count {
            let end = min(payload.count, offset + chunk)
            var fragmentHeader = header
            fragmentHeader.nextHeader = IPv6NextHeader.fragment
            fragmentHeader.payloadLength = IPv6FragmentHeader.length + end - offset
            var packet = [UInt8](repeating: 0, count: IPv6Header.length + IPv6FragmentHeader.length)
            packet.withUnsafeMutableBytes { bytes in
                fragmentHeader.emit(into: bytes)
                IPv6FragmentHeader(nextHeader: header.nextHeader, offset: offset, moreFragments: end < payload.count,
                                   identification: identification).emit(into: bytes, at: IPv6Header.length)
            }
            packet += payload[offset..<end]
            packets.append(packet)
            offset = end
        }
        return packets
    }

    /// Puts a whole IPv6 packet on the link to `destinationMAC`; a full link drops it (counted).
    func transmitIPv6(_ packet: [UInt8], to destinationMAC: MACAddress) {
        let sent = transmitFrame { frame in
            EthernetHeader(destination: destinationMAC, source: mac, etherType: .ipv6).emit(into: frame)
            packet.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length...]).copyMemory(from: $0) }
            return EthernetHeader.length + packet.count
        }
        if sent { count(.ipv6TxPackets) } else { drop(.ethernetTxDropLinkFull) }
    }

    /// Lowers the path MTU to `destination` (RFC 8201 4): never below 1280,
    /// never above the link's; bounded, the entry expiring first evicted.
    func learnPathMTU(_ reported: Int, to destination: IPv6Address, now: StackInstant) {
        let mtu = max(Self.ipv6MinimumMTU, min(reported, ipv6LinkMTU ?? configuration.mtu))
        guard mtu < pathMTU(to: destination, now: now) else { return }
        if pathMTUs[destination] == nil, pathMTUs.count >= configuration.pathMTUCapacity,
           let oldest = pathMTUs.min(by: { ($0.value.validUntil, $0.key.high, $0.key.low) < ($1.value.validUntil, $1.key.high, $1.key.low) }) {
            pathMTUs[oldest.key] = nil
        }
        pathMTUs[destination] = (mtu, now + configuration.pathMTUTimeout)
        count(.ipv6PathMTUUpdates)
    }
}

extension IPv6Header {
    /// The header followed by `payload`, as one packet.
    func packet(with payload: [UInt8]) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: Self.length)
        packet.withUnsafeMutableBytes { emit(into: $0) }
        return packet + payload
    }
}
