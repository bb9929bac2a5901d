import SocketAPI
import Wire

// Neighbour discovery (RFC 4861) and stateless address autoconfiguration
// (RFC 4862): addresses checked unique before use, solicitations answered,
// neighbours resolved and kept with their reachability states, routers
// solicited and their advertisements' prefixes turned into addresses.
extension NetworkStack {
    /// Takes the link-local and configured addresses: tentative while a
    /// solicitation from :: asks whether anyone holds them (RFC 4862 5.4.2);
    /// at once without DAD (configured off, or a link without neighbour
    /// discovery). With autoconfiguration, routers are solicited.
    func startIPv6(now: StackInstant) {
        for address in [linkLocalAddress] + configuration.ipv6Addresses where ipv6AddressStates[address] == nil {
            addIPv6Address(address, now: now)
        }
        runDuplicateAddressDetection(now: now)
        if configuration.ipv6Autoconfiguration && configuration.resolvesLinkAddresses {
            routerSolicitationsLeft = configuration.routerSolicitations
            nextRouterSolicitationAt = now
            runRouterSolicitations(now: now)
        }
    }

    func addIPv6Address(_ address: IPv6Address, now: StackInstant) {
        let probes = configuration.resolvesLinkAddresses ? configuration.duplicateAddressDetectionTransmits : 0
        let joins = !listenedGroups.contains(address.solicitedNode)
        ipv6AddressStates[address] = probes > 0 ? .tentative(probesLeft: probes, nextAt: now) : .preferred
        // Joining its solicited-node group comes before the probe (RFC 4862 5.4.2).
        if joins { mldStateChanged(address.solicitedNode, joined: true, now: now) }
    }

    func runDuplicateAddressDetection(now: StackInstant) {
        for (address, state) in ipv6AddressStates {
            guard case .tentative(let probesLeft, let nextAt) = state else { continue }
            guard nextAt <= now else { schedule(nextAt); continue }
            if probesLeft == 0 {
                ipv6AddressStates[address] = .preferred  // nobody answered within RetransTimer
                continue
            }
            sendNeighborSolicitation(for: address, from: .unspecified, to: address.solicitedNode, mac: address.solicitedNode.multicastMAC)
            let next = now + configuration.duplicateAddressDetectionInterval
            ipv6AddressStates[address] = .tentative(probesLeft: probesLeft - 1, nextAt: next)
            schedule(next)
        }
    }

    /// Someone else holds a tentative address (RFC 4862 5.4.5): never use it.
    func addressConflict(_ address: IPv6Address) {
        ipv6AddressStates[address] = .duplicate
        if !listenedGroups.contains(address.solicitedNode) {
            mldStateChanged(address.solicitedNode, joined: false, now: latestInstant)
        }
        count(.ipv6DadConflicts)
        onAddressConflict?(address)
    }

    // MARK: Messages

    /// A neighbour solicitation for `target` (RFC 4861 4.3, 7.2.2): from ::
    /// without options for DAD, else with our MAC as source link-layer option.
    func sendNeighborSolicitation(for target: IPv6Address, from source: IPv6Address, to destination: IPv6Address, mac: MACAddress) {
        var body = [UInt8](repeating: 0, count: source.isUnspecified ? 20 : 28)
        body.withUnsafeMutableBytes { bytes in
            target.write(to: bytes, at: 4)
            if !source.isUnspecified { writeLinkLayerOption(type: 1, into: bytes, at: 20) }
        }
        body.withUnsafeBytes { sendNDP(type: ICMPv6Type.neighborSolicitation, from: source, to: destination, mac: mac, body: $0) }
        count(.icmpv6TxNeighborSolicitations)
    }

    /// Our MAC as a link-layer address option (type 1 source, 2 target; RFC 4861 4.6.1).
    func writeLinkLayerOption(type: UInt8, into bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes[offset] = type
        bytes[offset + 1] = 1
        mac.write(to: bytes, at: offset + 2)
    }

    /// Walks a neighbour discovery message's options from `offset` (RFC 4861
    /// 4.6): `body` sees each option's type and bytes. False when one has
    /// length 0 or runs past the end (the message is then discarded).
    func forEachNDPOption(_ message: UnsafeRawBufferPointer, from offset: Int,
                          _ body: (UInt8, UnsafeRawBufferPointer) -> Void) -> Bool {
        var offset = offset
        while offset < message.count {
            guard offset + 2 <= message.count else { return false }
            let length = Int(message[offset + 1]) * 8
            guard length > 0, offset + length <= message.count else { return false }
            body(message[offset], UnsafeRawBufferPointer(rebasing: message[offset..<(offset + length)]))
            offset += length
        }
        return true
    }

    /// RFC 4861 7.1.1 and 7.2.3-4: a valid solicitation for our address gets
    /// an advertisement with our MAC: solicited, to its sender; to all nodes
    /// without the solicited flag when the sender had no address yet (DAD).
    /// The sender's link-layer address goes into the neighbour cache.
    func receiveNeighborSolicitation(_ datagram: IPv6Datagram) {
        count(.icmpv6RxNeighborSolicitations)
        let message = datagram.payload
        guard datagram.hopLimit == 255, message[1] == 0, message.count >= 24,
              !IPv6Address(reading: message, at: 8).isMulticast else { return drop(.icmpv6DropInvalidNeighborDiscovery) }
        let fromUnspecified = datagram.source.isUnspecified
        var senderMAC: MACAddress?
        guard forEachNDPOption(message, from: 24, { type, option in
            if type == 1, option.count >= 8 { senderMAC = MACAddress(reading: option, at: 2) }
        }) else { return drop(.icmpv6DropInvalidNeighborDiscovery) }
        // From :: it must be a DAD probe: to a solicited-node group, without a source link-layer option.
        if fromUnspecified && (senderMAC != nil || datagram.destination.high != 0xFF02_0000_0000_0000) {
            return drop(.icmpv6DropInvalidNeighborDiscovery)
        }
        let target = IPv6Address(reading: message, at: 8)
        guard let state = ipv6AddressStates[target], state != .duplicate else { return drop(.icmpv6DropNotOurTarget) }
        if case .tentative = state {
            // RFC 4862 5.4.3: another node probing the same tentative address means a duplicate; others are not answered yet.
            if fromUnspecified { addressConflict(target) } else { drop(.icmpv6DropNotOurTarget) }
            return
        }
        if let senderMAC, !fromUnspecified { learnNeighbor(datagram.source, mac: senderMAC, now: latestInstant) }
        let destination = fromUnspecified ? IPv6Address.allNodes : datagram.source
        // Where to answer: the option's MAC, else the cache's, else the frame's sender.
        let answerMAC = fromUnspecified ? IPv6Address.allNodes.multicastMAC
            : senderMAC ?? neighborCache[datagram.source]?.mac ?? frameSourceMAC
        // Flags: router 0, solicited (not for DAD), override; then the target and our MAC as its option.
        var body = [UInt8](repeating: 0, count: 28)
        body[0] = fromUnspecified ? 0x20 : 0x60
        body.withUnsafeMutableBytes { bytes in
            target.write(to: bytes, at: 4)
            writeLinkLayerOption(type: 2, into: bytes, at: 20)
        }
        body.withUnsafeBytes { body in
            sendNDP(type: ICMPv6Type.neighborAdvertisement, from: target, to: destination, mac: answerMAC, body: body)
        }
        count(.icmpv6TxNeighborAdvertisements)
    }

    /// RFC 4861 7.1.2 and 7.2.5, RFC 4862 5.4.4.
    func receiveNeighborAdvertisement(_ datagram: IPv6Datagram) {
        count(.icmpv6RxNeighborAdvertisements)
        let message = datagram.payload
        guard datagram.hopLimit == 255, message[1] == 0, message.count >= 24 else { return drop(.icmpv6DropInvalidNeighborDiscovery) }
        let flags = message[4]
        let (isRouter, solicited, override) = (flags & 0x80 != 0, flags & 0x40 != 0, flags & 0x20 != 0)
        let target = IPv6Address(reading: message, at: 8)
        guard !target.isMulticast, !(solicited && datagram.destination.isMulticast) else { return drop(.icmpv6DropInvalidNeighborDiscovery) }
        var targetMAC: MACAddress?
        guard forEachNDPOption(message, from: 24, { type, option in
            if type == 2, option.count >= 8 { targetMAC = MACAddress(reading: option, at: 2) }
        }) else { return drop(.icmpv6DropInvalidNeighborDiscovery) }
        // An advertisement for a tentative address means it is taken.
        if case .tentative = ipv6AddressStates[target] { return addressConflict(target) }
        guard let entry = neighborCache[target] else { return }  // unsolicited, no entry: nothing to update
        let now = latestInstant
        if entry.state == .incomplete {
            guard let targetMAC else { return }
            neighborCache.update(target) {
                $0.mac = targetMAC
                $0.state = solicited ? .reachable : .stale
                $0.confirmedAt = now
                $0.timerAt = nil
                $0.isRouter = isRouter
            }
            return flushPending(for: target)
        }
        let changed = targetMAC != nil && targetMAC != entry.mac
        if !override && changed {
            // Another MAC without override: believed only enough to check (RFC 4861 7.2.5).
            if entry.state == .reachable { neighborCache.update(target) { $0.state = .stale } }
            return
        }
        neighborCache.update(target) {
            if let targetMAC { $0.mac = targetMAC }
            if solicited {
                $0.state = .reachable
                $0.confirmedAt = now
                $0.timerAt = nil
                $0.solicitationsSent = 0
            } else if changed {
                $0.state = .stale
                $0.timerAt = nil
            }
            $0.isRouter = isRouter
        }
    }

    /// A neighbour told us its MAC in a solicitation or advertisement
    /// option (RFC 4861 7.2.3): created or updated as stale when new or changed.
    func learnNeighbor(_ address: IPv6Address, mac neighborMAC: MACAddress, isRouter: Bool = false, now: StackInstant) {
        if let entry = neighborCache[address] {
            guard entry.mac != neighborMAC else {
                if isRouter { neighborCache.update(address) { $0.isRouter = true } }
                return
            }
            neighborCache.update(address) {
                $0.mac = neighborMAC
                $0.state = .stale
                $0.timerAt = nil
                if isRouter { $0.isRouter = true }
            }
            if entry.state == .incomplete { flushPending(for: address) }
            return
        }
        if neighborCache.insert(address, NeighborCache.Entry(mac: neighborMAC, state: .stale, confirmedAt: now, isRouter: isRouter)) != nil {
            count(.icmpv6NeighborCacheEvictions)
        }
    }

    /// Sends what waited for a neighbour now resolved.
    func flushPending(for address: IPv6Address) {
        guard let neighborMAC = neighborCache[address]?.mac else { return }
        for packet in neighborCache.takePending(address) { transmitIPv6(packet, to: neighborMAC) }
    }

    // MARK: Resolution (RFC 4861 7.2, 7.3)

    /// The MAC for `nextHop`, or nil when it must be resolved first (the
    /// caller parks the packet). Moves a stale entry on to delay (7.3.3).
    func resolvedMAC(forIPv6 nextHop: IPv6Address, now: StackInstant) -> MACAddress? {
        guard configuration.resolvesLinkAddresses else { return .zero }
        if nextHop.isMulticast { return nextHop.multicastMAC }
        guard let entry = neighborCache[nextHop], let neighborMAC = entry.mac else { return nil }
        switch entry.state {
        case .reachable where now.since(entry.confirmedAt) < configuration.neighborReachableTime:
            break
        case .reachable, .stale:
            neighborCache.update(nextHop) {
                $0.state = .delay
                $0.timerAt = now + configuration.neighborDelayFirstProbe
            }
            schedule(now + configuration.neighborDelayFirstProbe)
        default:
            break
        }
        return neighborMAC
    }

    /// Parks a packet for `nextHop`, starting resolution (a multicast
    /// solicitation) when none runs. Bounded per neighbour and in bytes.
    func park(_ packet: [UInt8], for nextHop: IPv6Address, now: StackInstant) {
        if neighborCache[nextHop] == nil {
            let entry = NeighborCache.Entry(mac: nil, state: .incomplete, confirmedAt: now, solicitationsSent: 1,
                                            timerAt: now + configuration.neighborRetransmitInterval)
            if neighborCache.insert(nextHop, entry) != nil { count(.icmpv6NeighborCacheEvictions) }
            solicit(nextHop, unicastTo: nil)
            schedule(now + configuration.neighborRetransmitInterval)
        }
        guard neighborCache.park(packet, for: nextHop, perEntry: configuration.arpPendingPacketsPerNeighbour,
                                 maximumBytes: configuration.arpPendingMaximumBytes) else {
            return drop(.ipv6TxDropPendingQueueFull)
        }
    }

    /// A solicitation for a neighbour: multicast to its solicited-node group
    /// while resolving, unicast to its MAC while probing.
    func solicit(_ neighbor: IPv6Address, unicastTo neighborMAC: MACAddress?) {
        guard let source = sourceAddress(for: neighbor) else { return }
        if let neighborMAC {
            sendNeighborSolicitation(for: neighbor, from: source, to: neighbor, mac: neighborMAC)
        } else {
            sendNeighborSolicitation(for: neighbor, from: source, to: neighbor.solicitedNode, mac: neighbor.solicitedNode.multicastMAC)
        }
    }

    /// Retransmissions, delay → probe, and giving up (RFC 4861 7.3.3).
    func runNeighborTimers(now: StackInstant) {
        for (address, entry) in neighborCache.entries {
            guard let due = entry.timerAt else { continue }
            guard due <= now else { schedule(due); continue }
            let retransmit = now + configuration.neighborRetransmitInterval
            switch entry.state {
            case .incomplete, .probe:
                guard entry.solicitationsSent < configuration.neighborMaxSolicitations else {
                    let lost = neighborCache.remove(address)?.pending.count ?? 0
                    for _ in 0..<lost { drop(.ipv6TxDropResolutionFailed) }
                    count(.icmpv6ResolutionFailures)
                    continue
                }
                solicit(address, unicastTo: entry.state == .probe ? entry.mac : nil)
                neighborCache.update(address) { $0.solicitationsSent += 1; $0.timerAt = retransmit }
                schedule(retransmit)
            case .delay:
                solicit(address, unicastTo: entry.mac)
                neighborCache.update(address) { $0.state = .probe; $0.solicitationsSent = 1; $0.timerAt = retransmit }
                schedule(retransmit)
            case .reachable, .stale:
                neighborCache.update(address) { $0.timerAt = nil }
            }
        }
    }

    // MARK: Routers and autoconfiguration (RFC 4861 6.3, RFC 4862 5.5)

    func runRouterSolicitations(now: StackInstant) {
        guard routerSolicitationsLeft > 0, defaultRouter == nil else { return }
        guard nextRouterSolicitationAt <= now else { return schedule(nextRouterSolicitationAt) }
        // From the link-local address once it is ours, with our MAC; from :: without it before (RFC 4861 6.3.7).
        let source = isOurIPv6Address(linkLocalAddress) ? linkLocalAddress : IPv6Address.unspecified
        var body = [UInt8](repeating: 0, count: source.isUnspecified ? 4 : 12)
        if !source.isUnspecified { body.withUnsafeMutableBytes { writeLinkLayerOption(type: 1, into: $0, at: 4) } }
        body.withUnsafeBytes {
            sendNDP(type: ICMPv6Type.routerSolicitation, from: source, to: .allRouters, mac: IPv6Address.allRouters.multicastMAC, body: $0)
        }
        count(.icmpv6TxRouterSolicitations)
        routerSolicitationsLeft -= 1
        nextRouterSolicitationAt = now + configuration.routerSolicitationInterval
        if routerSolicitationsLeft > 0 { schedule(nextRouterSolicitationAt) }
    }

    /// RFC 4861 6.1.2 checks, then the router (default route), its MAC, the
    /// on-link prefixes and, with autoconfiguration, an address per /64
    /// prefix with the A flag (RFC 4862 5.5.3).
    func receiveRouterAdvertisement(_ datagram: IPv6Datagram, now: StackInstant) {
        count(.icmpv6RxRouterAdvertisements)
        let message = datagram.payload
        guard datagram.hopLimit == 255, datagram.source.isLinkLocal, message[1] == 0, message.count >= 16 else {
            return drop(.icmpv6DropInvalidNeighborDiscovery)
        }
        var routerMAC: MACAddress?
        var advertisedMTU: Int?
        var prefixes: [(prefix: IPv6Address, length: Int, onLink: Bool, autonomous: Bool, valid: UInt32, preferred: UInt32)] = []
        var malformed = false
        guard forEachNDPOption(message, from: 16, { type, option in
            switch type {
            case 1 where option.count >= 8:
                routerMAC = MACAddress(reading: option, at: 2)
            case 5 where option.count == 8:
                advertisedMTU = Int(option.u32(at: 4))
            case 3:
                guard option.count == 32 else { malformed = true; return }
                let prefix = IPv6Address(reading: option, at: 16)
                prefixes.append((prefix, Int(option[2]), option[3] & 0x80 != 0, option[3] & 0x40 != 0,
                                 option.u32(at: 4), option.u32(at: 8)))
            default:
                break  // other options (MTU, RDNSS, ...) are not used
            }
        }), !malformed else { return drop(.icmpv6DropInvalidNeighborDiscovery) }

        // RFC 4861 6.3.4: an MTU option within what IPv6 needs and the link carries sets the link's MTU for IPv6.
        if let advertisedMTU {
            if (Self.ipv6MinimumMTU...configuration.mtu).contains(advertisedMTU) { ipv6LinkMTU = advertisedMTU } else { drop(.icmpv6DropInvalidNeighborDiscovery) }
        }
        let lifetime = StackDuration.seconds(Double(message.u16(at: 6)))
        if lifetime.nanoseconds == 0 {
            if defaultRouter?.address == datagram.source { defaultRouter = nil }
        } else {
            defaultRouter = (datagram.source, now + lifetime)
        }
        if let routerMAC { learnNeighbor(datagram.source, mac: routerMAC, isRouter: true, now: now) }
        for info in prefixes where !info.prefix.isLinkLocal && info.length <= 128 {
            let valid = StackDuration.seconds(Double(info.valid))
            if info.onLink {
                onLinkPrefixes.removeAll { $0.prefix == info.prefix && $0.length == info.length }
                if info.valid > 0, onLinkPrefixes.count < configuration.ipv6MaximumAddresses {
                    onLinkPrefixes.append((info.prefix, info.length, now + valid))
                }
            }
            // RFC 4862 5.5.3: a /64 (our identifier is 64 bits), preferred lifetime within the valid one.
            guard configuration.ipv6Autoconfiguration, info.autonomous, info.length == 64, info.preferred <= info.valid,
                  info.valid > 0 else { continue }
            let address = IPv6Address(prefix: info.prefix, interfaceIdentifier: linkLocalAddress.low)
            guard ipv6AddressStates[address] == nil else { continue }
            guard ipv6AddressStates.count < configuration.ipv6MaximumAddresses else { drop(.ipv6DropAddressLimit); continue }
            addIPv6Address(address, now: now)
            count(.ipv6AddressesAutoconfigured)
            runDuplicateAddressDetection(now: now)
        }
    }

    /// Sends a neighbour discovery message (hop limit 255, RFC 4861) straight
    /// to `destinationMAC`: these are how MACs are learnt, so they never wait for one.
    func sendNDP(type: UInt8, from source: IPv6Address, to destination: IPv6Address, mac destinationMAC: MACAddress,
                 body: UnsafeRawBufferPointer) {
        let messageLength = 4 + body.count
        let sent = transmitFrame { frame in
            EthernetHeader(destination: destinationMAC, source: mac, etherType: .ipv6).emit(into: frame)
            let ip = UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length...])
            IPv6Header(payloadLength: messageLength, nextHeader: ICMPv6Type.nextHeader, hopLimit: 255,
                       source: source, destination: destination).emit(into: ip)
            let message = UnsafeMutableRawBufferPointer(rebasing: ip[IPv6Header.length..<(IPv6Header.length + messageLength)])
            message[0] = type
            message[1] = 0
            message.setU16(0, at: 2)
            UnsafeMutableRawBufferPointer(rebasing: message[4...]).copyMemory(from: body)
            message.setU16(ICMPv6Type.checksum(UnsafeRawBufferPointer(message), source: source, destination: destination), at: 2)
            return EthernetHeader.length + IPv6Header.length + messageLength
        }
        if sent { count(.ipv6TxPackets) } else { drop(.ethernetTxDropLinkFull) }
    }
}
