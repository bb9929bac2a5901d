import Wire

/// IPv6 frames as a peer on the link would send them.
extension FrameBuilder {
    /// The link-local addresses the MACs give (modified EUI-64).
    public static let peerLinkLocal = IPv6Address.linkLocal(from: peerMAC)
    public static let stackLinkLocal = IPv6Address.linkLocal(from: stackMAC)

    /// An Ethernet frame carrying an IPv6 packet of `payload` (next header `next`).
    public static func ipv6Frame(next: UInt8, payload: [UInt8], source: IPv6Address = peerLinkLocal,
                                 destination: IPv6Address = stackLinkLocal, hopLimit: UInt8 = 64,
                                 ethernetDestination: MACAddress = stackMAC) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: IPv6Header.length) + payload
        packet.withUnsafeMutableBytes {
            IPv6Header(payloadLength: payload.count, nextHeader: next, hopLimit: hopLimit,
                       source: source, destination: destination).emit(into: $0)
        }
        return ethernet(destination: ethernetDestination, type: .ipv6, payload: packet)
    }

    /// A UDP datagram over IPv6 from the peer's link-local address, checksum computed.
    public static func udp6Frame(sourcePort: UInt16 = 40000, destinationPort: UInt16, payload: [UInt8],
                                 source: IPv6Address = peerLinkLocal, destination: IPv6Address = stackLinkLocal) -> [UInt8] {
        var datagram = [UInt8](repeating: 0, count: UDPHeader.length) + payload
        datagram.withUnsafeMutableBytes {
            UDPHeader(sourcePort: sourcePort, destinationPort: destinationPort, payloadLength: payload.count)
                .emit(intoDatagram: $0, source: source, destination: destination)
        }
        return ipv6Frame(next: IPv6NextHeader.udp, payload: datagram, source: source, destination: destination)
    }

    /// A neighbour solicitation from the peer for `target`, with the peer's
    /// MAC as option: the stack learns the peer's MAC from it and answers.
    public static func neighborSolicitation(for target: IPv6Address = stackLinkLocal) -> [UInt8] {
        var message: [UInt8] = [ICMPv6Type.neighborSolicitation, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 16)
            + [1, 1] + peerMAC.octets
        message.withUnsafeMutableBytes { target.write(to: $0, at: 8) }
        let sum = message.withUnsafeBytes { ICMPv6Type.checksum($0, source: peerLinkLocal, destination: target.solicitedNode) }
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xFF)
        return ipv6Frame(next: ICMPv6Type.nextHeader, payload: message, destination: target.solicitedNode, hopLimit: 255,
                         ethernetDestination: target.solicitedNode.multicastMAC)
    }
}
