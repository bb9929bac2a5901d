/// One-line summaries of frames, in the style of `tcpdump -n`, for trace
/// and drop logs. Never traps: whatever cannot be parsed is said so.
public enum FrameDescription {
    /// Summarises an Ethernet frame.
    public static func describe(_ frame: UnsafeRawBufferPointer) -> String {
        guard let ethernet = try? EthernetFrameView(frame) else { return "runt frame, length \(frame.count)" }
        switch ethernet.etherType {
        case .arp: return describeARP(ethernet.payload)
        case .ipv4: return describeIPv4(ethernet.payload)
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
}
