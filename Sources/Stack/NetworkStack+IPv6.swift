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

// IPv6, first steps (RFC 8200, RFC 4443, RFC 4861, RFC 4862): the link-local
// address made from the MAC and any configured ones, each checked unique
// (DAD) before use; neighbour solicitations for them answered, echo
// requests to them answered. Nothing else yet: no SLAAC, neighbour cache,
// extension headers, fragments or UDP (issue 17).
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
        destination == IPv6Address.allNodes.multicastMAC
            || ipv6AddressStates.keys.contains { $0.solicitedNode.multicastMAC == destination }
    }

    /// Takes the link-local and configured addresses: tentative while a
    /// solicitation from :: asks whether anyone holds them (RFC 4862 5.4.2);
    /// at once without DAD (configured off, or a link without neighbour discovery).
    func startIPv6(now: StackInstant) {
        let probes = configuration.resolvesLinkAddresses ? configuration.duplicateAddressDetectionTransmits : 0
        for address in [linkLocalAddress] + configuration.ipv6Addresses where ipv6AddressStates[address] == nil {
            ipv6AddressStates[address] = probes > 0 ? .tentative(probesLeft: probes, nextAt: now) : .preferred
        }
        runDuplicateAddressDetection(now: now)
    }

    func runDuplicateAddressDetection(now: StackInstant) {
        for (address, state) in ipv6AddressStates {
            guard case .tentative(let probesLeft, let nextAt) = state else { continue }
            guard nextAt <= now else { schedule(nextAt); continue }
            if probesLeft == 0 {
                ipv6AddressStates[address] = .preferred  // nobody answered within RetransTimer
                continue
            }
            sendNeighborSolicitation(for: address)
            let next = now + configuration.duplicateAddressDetectionInterval
            ipv6AddressStates[address] = .tentative(probesLeft: probesLeft - 1, nextAt: next)
            schedule(next)
        }
    }

    /// A DAD probe: from ::, to the target's solicited-node group, no options (RFC 4862 5.4.2).
    func sendNeighborSolicitation(for target: IPv6Address) {
        var body = [UInt8](repeating: 0, count: 20)
        body.withUnsafeMutableBytes { target.write(to: $0, at: 4) }
        body.withUnsafeBytes { body in
            sendICMPv6(type: ICMPv6Type.neighborSolicitation, from: .unspecified, to: target.solicitedNode,
                       mac: target.solicitedNode.multicastMAC, body: body, hopLimit: 255)
        }
        count(.icmpv6TxNeighborSolicitations)
    }

    /// Someone else holds a tentative address (RFC 4862 5.4.5): never use it.
    func addressConflict(_ address: IPv6Address) {
        ipv6AddressStates[address] = .duplicate
        count(.ipv6DadConflicts)
        onAddressConflict?(address)
    }

    /// `source`: the Ethernet sender, where answers go (there is no neighbour cache yet).
    func receiveIPv6(_ bytes: UnsafeRawBufferPointer, from sourceMAC: MACAddress, now: StackInstant) {
        count(.ipv6RxPackets)
        let packet: IPv6PacketView
        do { packet = try IPv6PacketView(bytes) } catch {
            switch error {
            case .badVersion: return drop(.ipv6DropBadVersion)
            default: return drop(.ipv6DropTruncated)
            }
        }
        let destination = packet.destination
        guard ipv6AddressStates[destination] != nil || destination == .allNodes
                || ipv6AddressStates.keys.contains(where: { $0.solicitedNode == destination }) else {
            return drop(.ipv6DropNotForUs)
        }
        guard packet.nextHeader == ICMPv6Type.nextHeader else { return drop(.ipv6DropUnsupportedNextHeader) }
        receiveICMPv6(packet, from: sourceMAC, now: now)
    }

    func receiveICMPv6(_ packet: IPv6PacketView, from sourceMAC: MACAddress, now: StackInstant) {
        count(.icmpv6RxMessages)
        let message = packet.payload
        guard message.count >= 4 else { return drop(.icmpv6DropTruncated) }
        guard ICMPv6Type.checksum(message, source: packet.source, destination: packet.destination) == 0 else {
            return drop(.icmpv6DropBadChecksum)
        }
        switch message[0] {
        case ICMPv6Type.echoRequest:
            count(.icmpv6RxEchoRequests)
            // RFC 4443 4.1: answer echoes to our unicast address; multicast ones may be ignored, as Linux does by default.
            guard isOurIPv6Address(packet.destination), message.count >= 8 else { return drop(.icmpv6DropUnhandledType) }
            sendICMPv6(type: ICMPv6Type.echoReply, from: packet.destination, to: packet.source, mac: sourceMAC,
                       body: UnsafeRawBufferPointer(rebasing: message[4...]))
        case ICMPv6Type.neighborSolicitation:
            receiveNeighborSolicitation(packet, from: sourceMAC)
        case ICMPv6Type.neighborAdvertisement:
            // RFC 4862 5.4.4: an advertisement for a tentative address means it is taken.
            count(.icmpv6RxNeighborAdvertisements)
            guard packet.hopLimit == 255, message.count >= 24 else { return drop(.icmpv6DropInvalidNeighborDiscovery) }
            let target = IPv6Address(reading: message, at: 8)
            if case .tentative = ipv6AddressStates[target] { addressConflict(target) }
        default:
            drop(.icmpv6DropUnhandledType)
        }
    }

    /// RFC 4861 7.1.1 and 7.2.4: a valid solicitation for our address gets
    /// an advertisement with our MAC: solicited, to its sender; to all nodes
    /// without the solicited flag when the sender had no address yet (DAD).
    func receiveNeighborSolicitation(_ packet: IPv6PacketView, from sourceMAC: MACAddress) {
        count(.icmpv6RxNeighborSolicitations)
        let message = packet.payload
        guard packet.hopLimit == 255, message[1] == 0, message.count >= 24,
              !IPv6Address(reading: message, at: 8).isMulticast else { return drop(.icmpv6DropInvalidNeighborDiscovery) }
        let target = IPv6Address(reading: message, at: 8)
        guard let state = ipv6AddressStates[target], state != .duplicate else { return drop(.icmpv6DropNotOurTarget) }
        if case .tentative = state {
            // RFC 4862 5.4.3: another node probing the same tentative address means a duplicate; others are not answered yet.
            if packet.source.isUnspecified { addressConflict(target) } else { drop(.icmpv6DropNotOurTarget) }
            return
        }
        // Options in 8-byte units, none of length 0; a source link-layer address names where to answer.
        var answerMAC = sourceMAC
        var offset = 24
        while offset + 2 <= message.count {
            let length = Int(message[offset + 1]) * 8
            guard length > 0, offset + length <= message.count else { return drop(.icmpv6DropInvalidNeighborDiscovery) }
            if message[offset] == 1, length >= 8 { answerMAC = MACAddress(reading: message, at: offset + 2) }
            offset += length
        }
        let fromUnspecified = packet.source.isUnspecified
        let destination = fromUnspecified ? IPv6Address.allNodes : packet.source
        // Flags: router 0, solicited (not for DAD), override; then the target and our MAC as its option.
        var body = [UInt8](repeating: 0, count: 28)
        body[0] = fromUnspecified ? 0x20 : 0x60
        body.withUnsafeMutableBytes { bytes in
            target.write(to: bytes, at: 4)
            bytes[20] = 2
            bytes[21] = 1
            mac.write(to: bytes, at: 22)
        }
        body.withUnsafeBytes { body in
            sendICMPv6(type: ICMPv6Type.neighborAdvertisement, from: target, to: destination,
                       mac: fromUnspecified ? IPv6Address.allNodes.multicastMAC : answerMAC, body: body, hopLimit: 255)
        }
        count(.icmpv6TxNeighborAdvertisements)
    }

    /// Sends an ICMPv6 message of `type` (code 0) whose bytes after the checksum are `body`.
    func sendICMPv6(type: UInt8, from source: IPv6Address, to destination: IPv6Address, mac destinationMAC: MACAddress,
                    body: UnsafeRawBufferPointer, hopLimit: UInt8 = 64) {
        let messageLength = 4 + body.count
        guard IPv6Header.length + messageLength <= configuration.mtu else { return drop(.icmpv6TxDropTooBig) }
        let sent = transmitFrame { frame in
            EthernetHeader(destination: destinationMAC, source: mac, etherType: .ipv6).emit(into: frame)
            let ip = UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length...])
            IPv6Header(payloadLength: messageLength, nextHeader: ICMPv6Type.nextHeader, hopLimit: hopLimit,
                       source: source, destination: destination).emit(into: ip)
            let message = UnsafeMutableRawBufferPointer(rebasing: ip[IPv6Header.length..<(IPv6Header.length + messageLength)])
            message[0] = type
            message[1] = 0
            message.storeBytes(of: UInt16(0), toByteOffset: 2, as: UInt16.self)
            if body.count > 0 { UnsafeMutableRawBufferPointer(rebasing: message[4...]).copyMemory(from: body) }
            let checksum = ICMPv6Type.checksum(UnsafeRawBufferPointer(message), source: source, destination: destination)
            message.storeBytes(of: checksum.bigEndian, toByteOffset: 2, as: UInt16.self)
            return EthernetHeader.length + IPv6Header.length + messageLength
        }
        guard sent else { return drop(.ethernetTxDropLinkFull) }
        count(.ipv6TxPackets)
        if type == ICMPv6Type.echoReply { count(.icmpv6TxEchoReplies) }
    }
}
