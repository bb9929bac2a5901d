import PropertyBased
import Testing
@testable import Wire

/// Emit then parse gives back the same value, for arbitrary field values;
/// and no parser traps on arbitrary bytes.
@Suite struct RoundTripPropertyTests {
    static let mac = Gen.uint64(in: 0...0xFFFF_FFFF_FFFF).map { MACAddress(rawValue: $0) }
    static let ip = Gen.uint32().map { IPv4Address(rawValue: $0) }
    static let bytes = Gen.uint8().array(of: 0...600)

    @Test func ethernetHeader() async {
        await propertyCheck(input: Self.mac, Self.mac, Gen.uint16()) { destination, source, type in
            let header = EthernetHeader(destination: destination, source: source, etherType: EtherType(rawValue: type))
            var buffer = [UInt8](repeating: 0, count: EthernetHeader.length)
            buffer.withUnsafeMutableBytes { header.emit(into: $0) }
            let parsed = try buffer.withUnsafeBytes { try EthernetHeader(EthernetFrameView($0)) }
            #expect(parsed == header)
        }
    }

    @Test func arpPacket() async {
        await propertyCheck(input: Gen.bool, Self.mac, Self.ip, Self.mac, Self.ip) { request, senderMAC, senderIP, targetMAC, targetIP in
            let packet = ARPPacket(operation: request ? .request : .reply, senderMAC: senderMAC, senderIP: senderIP,
                                   targetMAC: targetMAC, targetIP: targetIP)
            var buffer = [UInt8](repeating: 0, count: ARPPacket.length)
            buffer.withUnsafeMutableBytes { packet.emit(into: $0) }
            let parsed = try buffer.withUnsafeBytes { try ARPPacket(ARPPacketView($0)) }
            #expect(parsed == packet)
        }
    }

    @Test func ipv4Header() async {
        await propertyCheck(input: Gen.uint8(), Gen.int(in: 0...1480), Gen.uint16(), Gen.bool, Gen.bool,
                            Gen.int(in: 0...0x1FFF), Gen.uint8(), Gen.uint8(), Self.ip, Self.ip) {
            tos, length, id, df, mf, offsetUnits, ttl, proto, source, destination in
            let header = IPv4Header(typeOfService: tos, payloadLength: length, identification: id, dontFragment: df,
                                    moreFragments: mf, fragmentOffset: offsetUnits * 8, ttl: ttl,
                                    proto: IPProtocol(rawValue: proto), source: source, destination: destination)
            var buffer = [UInt8](repeating: 0, count: IPv4Header.length + length)
            buffer.withUnsafeMutableBytes { header.emit(into: $0) }
            let parsed = try buffer.withUnsafeBytes { try IPv4Header(IPv4PacketView($0)) }
            #expect(parsed == header)
        }
    }

    @Test func icmpMessage() async {
        await propertyCheck(input: Gen.uint8(), Gen.uint8(), Gen.uint32(), Self.bytes) { type, code, rest, payload in
            let header = ICMPv4Header(type: type, code: code, restOfHeader: rest)
            var message = [UInt8](repeating: 0, count: ICMPv4Header.length) + payload
            message.withUnsafeMutableBytes { header.emit(intoMessage: $0) }
            try message.withUnsafeBytes { raw in
                let view = try ICMPv4MessageView(raw)
                #expect(try ICMPv4Header(view) == header)
                #expect(Array(view.payload) == payload)
            }
        }
    }

    @Test func udpDatagram() async {
        await propertyCheck(input: Gen.uint16(), Gen.uint16(), Self.bytes, Self.ip, Self.ip) { sourcePort, destinationPort, payload, source, destination in
            let header = UDPHeader(sourcePort: sourcePort, destinationPort: destinationPort, payloadLength: payload.count)
            var datagram = [UInt8](repeating: 0, count: UDPHeader.length) + payload
            datagram.withUnsafeMutableBytes { header.emit(intoDatagram: $0, source: source, destination: destination) }
            try datagram.withUnsafeBytes { raw in
                let view = try UDPDatagramView(raw)
                #expect(view.checksum != 0)
                #expect(try UDPHeader(view, source: source, destination: destination) == header)
                #expect(Array(view.payload) == payload)
            }
        }
    }

    @Test func parsersNeverTrapOnArbitraryBytes() async {
        await propertyCheck(count: 2000, input: Self.bytes) { bytes in
            bytes.withUnsafeBytes { raw in
                if let frame = try? EthernetFrameView(raw) { _ = (frame.source, frame.destination, frame.etherType, frame.payload.count) }
                if let arp = try? ARPPacketView(raw) { _ = try? ARPPacket(arp) }
                if let ip = try? IPv4PacketView(raw) {
                    _ = try? IPv4Header(ip)
                    _ = (ip.payload.count, ip.fragmentOffset, ip.source, ip.destination)
                }
                if let icmp = try? ICMPv4MessageView(raw) { _ = try? ICMPv4Header(icmp) }
                if let quoted = try? ICMPv4QuotedDatagramView(raw) { _ = (quoted.sourcePort, quoted.destinationPort, quoted.source) }
                if let udp = try? UDPDatagramView(raw) { _ = try? UDPHeader(udp, source: .any, destination: .broadcast) }
            }
        }
    }
}
