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
                                ethernetDestination: MACAddress = stackMAC) -> [UInt8] {
        ethernet(destination: ethernetDestination, type: .ipv4,
                 payload: ipv4(source: source, destination: destination, proto: .udp,
                               payload: udp(sourcePort: sourcePort, destinationPort: destinationPort, payload: payload,
                                            source: source, destination: destination)))
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
