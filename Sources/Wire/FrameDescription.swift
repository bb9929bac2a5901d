/// One-line summaries of frames, in the style of `tcpdump -n`, for trace
/// and drop logs. Never traps: whatever cannot be parsed is said so.
public enum FrameDescription {
    /// Summarises an Ethernet frame.
    public static func describe(_ frame: UnsafeRawBufferPointer) -> String {
        guard let ethernet = try? EthernetFrameView(frame) else { return "runt frame, length \(frame.count)" }
        switch ethernet.etherType {
        case .arp: return describeARP(ethernet.payload)
        case .ipv4: return describeIPv4(ethernet.payload)
        case .ipv6: return describeIPv6(ethernet.payload)
        default:
            return "\(ethernet.source) > \(ethernet.destination), ethertype \(ethernet.etherType), length \(frame.count)"
        }
    }

    static func describeARP(_ bytes: UnsafeRawBufferPointer) -> String {
        guard let view = try? ARPPacketView(bytes) else { return "ARP, truncated, length \(bytes.count)" }
        guard let packet = try? ARPPacket(view) else {
            return "ARP, unsupported hardware \(view.hardwareType) protocol 0x\(String(view.protocolType, radix: 16)), length \(bytes.count)"
        }
        switch packet.operation {
        case .request: return "ARP, Request who-has \(packet.targetIP) tell \(packet.senderIP), length \(bytes.count)"
        case .reply: return "ARP, Reply \(packet.senderIP) is-at \(packet.senderMAC), length \(bytes.count)"
        }
    }

    static func describeIPv4(_ bytes: UnsafeRawBufferPointer) -> String {
        let ip: IPv4PacketView
        do { ip = try IPv4PacketView(bytes) } catch { return "IP, malformed (\(error)), length \(bytes.count)" }
        var notes = ""
        if !ip.checksumIsValid { notes += " [bad ip cksum]" }
        if ip.isFragment {
            return "IP \(ip.source) > \(ip.destination): \(ip.proto) fragment id \(ip.identification), offset \(ip.fragmentOffset)\(ip.moreFragments ? ", flags [+]" : ""), length \(ip.payload.count)\(notes)"
        }
        switch ip.proto {
        case .udp:
            guard let udp = try? UDPDatagramView(ip.payload) else { return "IP \(ip.source) > \(ip.destination): UDP, bad length\(notes)" }
            if !udp.checksumIsValid(source: ip.source, destination: ip.destination) { notes += " [bad udp cksum]" }
            return "IP \(ip.source).\(udp.sourcePort) > \(ip.destination).\(udp.destinationPort): UDP, length \(udp.payload.count)\(notes)"
        case .icmp:
            guard let icmp = try? ICMPv4MessageView(ip.payload) else { return "IP \(ip.source) > \(ip.destination): ICMP, truncated\(notes)" }
            if !icmp.checksumIsValid { notes += " [bad icmp cksum]" }
            let what: String
            switch (icmp.type, icmp.code) {
            case (ICMPv4Type.echoRequest, _): what = "echo request, id \(icmp.identifier), seq \(icmp.sequenceNumber)"
            case (ICMPv4Type.echoReply, _): what = "echo reply, id \(icmp.identifier), seq \(icmp.sequenceNumber)"
            case (ICMPv4Type.destinationUnreachable, ICMPv4UnreachableCode.port): what = "udp port unreachable"
            case (ICMPv4Type.destinationUnreachable, ICMPv4UnreachableCode.proto): what = "protocol unreachable"
            case (ICMPv4Type.destinationUnreachable, let code): what = "destination unreachable, code \(code)"
            case (ICMPv4Type.timeExceeded, 1): what = "ip reassembly time exceeded"
            case (ICMPv4Type.timeExceeded, _): what = "time exceeded in-transit"
            case (let type, let code): what = "type \(type), code \(code)"
            }
            return "IP \(ip.source) > \(ip.destination): ICMP \(what), length \(ip.payload.count)\(notes)"
        default:
            return "IP \(ip.source) > \(ip.destination): \(ip.proto), length \(ip.payload.count)\(notes)"
        }
    }

    static func describeIPv6(_ bytes: UnsafeRawBufferPointer) -> String {
        let ip: IPv6PacketView
        do { ip = try IPv6PacketView(bytes) } catch { return "IP6, malformed (\(error)), length \(bytes.count)" }
        let (source, destination) = (ip.source, ip.destination)
        guard let (next, offset) = IPv6NextHeader.upperLayer(of: ip.packet) else {
            // A later fragment, or headers cut short: say what the first header is.
            if ip.nextHeader == IPv6NextHeader.fragment, let fragment = IPv6FragmentHeader(reading: ip.packet, at: IPv6PacketView.headerLength) {
                return "IP6 \(source) > \(destination): frag (\(fragment.offset)|\(ip.payload.count - IPv6FragmentHeader.length))\(fragment.moreFragments ? " [+]" : ""), id \(fragment.identification)"
            }
            return "IP6 \(source) > \(destination): extension headers cut short, length \(ip.payload.count)"
        }
        guard offset <= ip.packet.count else { return "IP6 \(source) > \(destination): truncated, length \(ip.payload.count)" }
        let upper = UnsafeRawBufferPointer(rebasing: ip.packet[offset...])
        var notes = ""
        switch next {
        case IPv6NextHeader.udp:
            guard let udp = try? UDPDatagramView(upper) else { return "IP6 \(source) > \(destination): UDP, bad length" }
            if !udp.checksumIsValid(source: source, destination: destination) { notes += " [bad udp cksum]" }
            return "IP6 \(source).\(udp.sourcePort) > \(destination).\(udp.destinationPort): UDP, length \(udp.payload.count)\(notes)"
        case IPv6NextHeader.icmpv6:
            guard upper.count >= 4 else { return "IP6 \(source) > \(destination): ICMP6, truncated" }
            if ICMPv6Type.checksum(upper, source: source, destination: destination) != 0 { notes += " [bad icmp6 cksum]" }
            let what: String
            switch (upper[0], upper[1]) {
            case (ICMPv6Type.echoRequest, _): what = "echo request"
            case (ICMPv6Type.echoReply, _): what = "echo reply"
            case (ICMPv6Type.neighborSolicitation, _): what = "neighbor solicitation"
            case (ICMPv6Type.neighborAdvertisement, _): what = "neighbor advertisement"
            case (ICMPv6Type.routerSolicitation, _): what = "router solicitation"
            case (ICMPv6Type.routerAdvertisement, _): what = "router advertisement"
            case (ICMPv6Type.destinationUnreachable, ICMPv6Type.UnreachableCode.port): what = "destination unreachable, unreachable port"
            case (ICMPv6Type.destinationUnreachable, let code): what = "destination unreachable, code \(code)"
            case (ICMPv6Type.packetTooBig, _): what = "packet too big"
            case (ICMPv6Type.timeExceeded, let code): what = "time exceeded, code \(code)"
            case (ICMPv6Type.parameterProblem, let code): what = "parameter problem, code \(code)"
            case (let type, let code): what = "type \(type), code \(code)"
            }
            return "IP6 \(source) > \(destination): ICMP6, \(what), length \(upper.count)\(notes)"
        default:
            return "IP6 \(source) > \(destination): next header \(next), length \(ip.payload.count)"
        }
    }
}
