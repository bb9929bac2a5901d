import Wire

/// Builds frames as a peer on the wire would send them, using the Wire
/// builders (which the Wire tests check byte for byte against captures).
public enum FrameBuilder {
    public static let peerMAC = MACAddress("be:5e:63:13:bd:1b")!
    public static let peerIP = IPv4Address(192, 0, 2, 1)
    public static let stackMAC = MACAddress("02:00:00:00:00:02")!
    public static let stackIP = IPv4Address(192, 0, 2, 2)

    public static func ethernet(destination: MACAddress = stackMAC, source: MACAddress = peerMAC,
                                type: EtherType, payload: [UInt8]) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: 14) + payload
        frame.withUnsafeMutableBytes {
            EthernetHeader(destination: destination, source: source, etherType: type).emit(into: $0)
        }
        return frame
    }

    public static func arp(_ operation: ARPOperation, senderMAC: MACAddress = peerMAC, senderIP: IPv4Address = peerIP,
                           targetMAC: MACAddress = .zero, targetIP: IPv4Address = stackIP,
                           destination: MACAddress = .broadcast) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: ARPPacket.length)
        packet.withUnsafeMutableBytes {
            ARPPacket(operation: operation, senderMAC: senderMAC, senderIP: senderIP,
                      targetMAC: targetMAC, targetIP: targetIP).emit(into: $0)
        }
        return ethernet(destination: destination, source: senderMAC, type: .arp, payload: packet)
    }

    /// An IPv4 packet (header without options + payload).
    public static func ipv4(source: IPv4Address = peerIP, destination: IPv4Address = stackIP, proto: IPProtocol,
                            payload: [UInt8], identification: UInt16 = 0x1234, dontFragment: Bool = false,
                            moreFragments: Bool = false, fragmentOffset: Int = 0, ttl: UInt8 = 64) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: IPv4Header.length) + payload
        packet.withUnsafeMutableBytes {
            IPv4Header(payloadLength: payload.count, identification: identification, dontFragment: dontFragment,
                       moreFragments: moreFragments, fragmentOffset: fragmentOffset, ttl: ttl, proto: proto,
                       source: source, destination: destination).emit(into: $0)
        }
        return packet
    }

    /// A UDP datagram with a correct checksum.
    public static func udp(sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8],
                           source: IPv4Address = peerIP, destination: IPv4Address = stackIP) -> [UInt8] {
        var datagram = [UInt8](repeating: 0, count: UDPHeader.length) + payload
        datagram.withUnsafeMutableBytes {
            UDPHeader(sourcePort: sourcePort, destinationPort: destinationPort, payloadLength: payload.count)
                .emit(intoDatagram: $0, source: source, destination: destination)
        }
        return datagram
    }

    /// A whole Ethernet frame carrying a UDP datagram from the peer to the stack.
    public static func udpFrame(sourcePort: UInt16 = 40000, destinationPort: UInt16, payload: [UInt8],
                                source: IPv4Address = peerIP, destination: IPv4Address = stackIP,
                                ethernetDestination: MACAddress = stackMAC, ethernetSource: MACAddress = peerMAC,
                                identification: UInt16 = 0x1234) -> [UInt8] {
        ethernet(destination: ethernetDestination, source: ethernetSource, type: .ipv4,
                 payload: ipv4(source: source, destination: destination, proto: .udp,
                               payload: udp(sourcePort: sourcePort, destinationPort: destinationPort, payload: payload,
                                            source: source, destination: destination),
                               identification: identification))
    }

    /// An ICMP message with a correct checksum.
    public static func icmp(type: UInt8, code: UInt8 = 0, restOfHeader: UInt32 = 0, payload: [UInt8]) -> [UInt8] {
        var message = [UInt8](repeating: 0, count: ICMPv4Header.length) + payload
        message.withUnsafeMutableBytes {
            ICMPv4Header(type: type, code: code, restOfHeader: restOfHeader).emit(intoMessage: $0)
        }
        return message
    }

    /// A whole Ethernet frame carrying an ICMP echo request from the peer.
    public static func echoRequestFrame(identifier: UInt16 = 1, sequence: UInt16 = 1, payload: [UInt8],
                                        destination: IPv4Address = stackIP) -> [UInt8] {
        ethernet(type: .ipv4, payload: ipv4(destination: destination, proto: .icmp,
                                            payload: icmp(type: ICMPv4Type.echoRequest,
                                                          restOfHeader: UInt32(identifier) << 16 | UInt32(sequence),
                                                          payload: payload)))
    }
}

extension FrameBuilder {
    /// Splits an IPv4 packet (header without options) into fragments carrying
    /// at most `size` payload bytes each (a multiple of 8), as Ethernet frames.
    public static func fragments(of packet: [UInt8], size: Int, destinationMAC: MACAddress = stackMAC) -> [[UInt8]] {
        precondition(size % 8 == 0)
        let header = packet.withUnsafeBytes { try! IPv4Header(IPv4PacketView($0)) }
        let payload = Array(packet[20...])
        var frames: [[UInt8]] = []
        var offset = 0
        while offset < payload.count {
            let length = min(size, payload.count - offset)
            frames.append(fragment(of: header, payload: Array(payload[offset..<(offset + length)]), offset: offset,
                                   more: offset + length < payload.count, destinationMAC: destinationMAC))
            offset += length
        }
        return frames
    }

    /// One fragment of a datagram with `header`'s fields.
    public static func fragment(of header: IPv4Header, payload: [UInt8], offset: Int, more: Bool,
                                destinationMAC: MACAddress = stackMAC) -> [UInt8] {
        var fragmentHeader = header
        fragmentHeader.payloadLength = payload.count
        fragmentHeader.fragmentOffset = offset
        fragmentHeader.moreFragments = more
        var bytes = [UInt8](repeating: 0, count: 20) + payload
        bytes.withUnsafeMutableBytes { fragmentHeader.emit(into: $0) }
        return ethernet(destination: destinationMAC, type: .ipv4, payload: bytes)
    }

    /// Reassembles frames the stack sent (as a peer would), checking each is a
    /// well-formed fragment; returns the header of the first and the payload.
    public static func reassemble(_ frames: [[UInt8]]) throws -> (IPv4Header, [UInt8]) {
        var pieces: [(offset: Int, bytes: [UInt8], more: Bool)] = []
        var first: IPv4Header?
        for frame in frames {
            try frame.withUnsafeBytes { raw in
                let view = try IPv4PacketView(EthernetFrameView(raw).payload)
                let header = try IPv4Header(view)
                if header.fragmentOffset == 0 { first = header }
                pieces.append((header.fragmentOffset, Array(view.payload), header.moreFragments))
            }
        }
        pieces.sort { $0.offset < $1.offset }
        var payload: [UInt8] = []
        for piece in pieces {
            guard piece.offset == payload.count else { throw WireError.badLength }
            payload += piece.bytes
        }
        guard let first, pieces.last?.more == false else { throw WireError.truncated }
        return (first, payload)
    }

    /// `frame` (Ethernet, IPv4 without options, UDP) with its UDP checksum
    /// left partial, as a kernel with checksum offload hands it over: only
    /// the pseudo-header sum.
    public static func withPartialUDPChecksum(_ frame: [UInt8]) -> [UInt8] {
        var copy = frame
        let udpLength = Int(frame[38]) << 8 | Int(frame[39])
        var sum = UDPHeader.pseudoHeaderSum(source: IPv4Address(frame[26], frame[27], frame[28], frame[29]),
                                            destination: IPv4Address(frame[30], frame[31], frame[32], frame[33]),
                                            length: udpLength)
        sum.add(UInt16(0))
        let partial = ~sum.value
        copy[40] = UInt8(partial >> 8)
        copy[41] = UInt8(partial & 0xFF)
        return copy
    }
}
