/// An IPv6 address (RFC 4291), as two big-endian halves.
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Reads 16 bytes at `offset`. The caller has checked the bounds.
    @inlinable
    public init(reading bytes: UnsafeRawBufferPointer, at offset: Int) {
        high = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        low = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self))
    }

    /// Writes 16 bytes at `offset`. The caller has checked the bounds.
    @inlinable
    public func write(to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.storeBytes(of: high.bigEndian, toByteOffset: offset, as: UInt64.self)
        bytes.storeBytes(of: low.bigEndian, toByteOffset: offset + 8, as: UInt64.self)
    }

    public static let unspecified = IPv6Address(high: 0, low: 0)
    /// ff02::1, every node on the link.
    public static let allNodes = IPv6Address(high: 0xFF02_0000_0000_0000, low: 1)

    public var isUnspecified: Bool { high == 0 && low == 0 }
    public var isMulticast: Bool { high >> 56 == 0xFF }
    public var isLinkLocal: Bool { high >> 54 == 0xFE80 >> 6 }

    /// The link-local address made from a MAC by modified EUI-64 (RFC 4291
    /// appendix A, RFC 4862 5.3): fe80::, the MAC with ff:fe in its middle
    /// and the universal/local bit flipped.
    public static func linkLocal(from mac: MACAddress) -> IPv6Address {
        let m = mac.rawValue
        let identifier = ((m >> 24) << 40 | 0xFF_FE00_0000 | (m & 0xFF_FFFF)) ^ (0x02 << 56)
        return IPv6Address(high: 0xFE80_0000_0000_0000, low: identifier)
    }

    /// The solicited-node multicast address of this address: ff02::1:ffXX:XXXX
    /// with its low 24 bits (RFC 4291 2.7.1), where neighbour solicitations for it go.
    public var solicitedNode: IPv6Address {
        IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x1_FF00_0000 | (low & 0xFF_FFFF))
    }

    /// The Ethernet address of a multicast address: 33:33 and its low 32 bits (RFC 2464 7).
    public var multicastMAC: MACAddress { MACAddress(rawValue: 0x3333_0000_0000 | (low & 0xFFFF_FFFF)) }

    /// Eight groups of hex with the longest run of zero groups as `::` (RFC 5952).
    public var description: String {
        let groups = (0..<8).map { index -> UInt16 in
            let half = index < 4 ? high : low
            return UInt16(truncatingIfNeeded: half >> (UInt64(3 - index % 4) * 16))
        }
        var bestStart = -1, bestLength = 1
        var index = 0
        while index < 8 {
            guard groups[index] == 0 else { index += 1; continue }
            var end = index
            while end < 8 && groups[end] == 0 { end += 1 }
            if end - index > bestLength { bestStart = index; bestLength = end - index }
            index = end
        }
        let hex = groups.map { String($0, radix: 16) }
        guard bestStart >= 0 else { return hex.joined(separator: ":") }
        return hex[0..<bestStart].joined(separator: ":") + "::" + hex[(bestStart + bestLength)...].joined(separator: ":")
    }
}

/// A checked, zero-copy view of an IPv6 packet (RFC 8200): version 6, the
/// payload length within the buffer (what follows it is link padding).
public struct IPv6PacketView {
    public enum Field {
        public static let payloadLength = 4
        public static let nextHeader = 6
        public static let hopLimit = 7
        public static let source = 8
        public static let destination = 24
    }
    public static let headerLength = 40

    public let packet: UnsafeRawBufferPointer

    /// - Throws: `.truncated` below 40 bytes, `.badVersion`, `.badLength`
    ///   when the payload length runs past the buffer.
    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength else { throw .truncated }
        guard bytes[0] >> 4 == 6 else { throw .badVersion }
        let length = Int(bytes.u16(at: Field.payloadLength))
        guard Self.headerLength + length <= bytes.count else { throw .badLength }
        packet = UnsafeRawBufferPointer(rebasing: bytes[0..<(Self.headerLength + length)])
    }

    @inlinable public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: packet.u16(at: 0) >> 4) }
    @inlinable public var nextHeader: UInt8 { packet[Field.nextHeader] }
    @inlinable public var hopLimit: UInt8 { packet[Field.hopLimit] }
    @inlinable public var source: IPv6Address { IPv6Address(reading: packet, at: Field.source) }
    @inlinable public var destination: IPv6Address { IPv6Address(reading: packet, at: Field.destination) }
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: packet[Self.headerLength...]) }
}

/// The IPv6 header as a plain value (no extension headers).
public struct IPv6Header: Equatable, Sendable {
    public var payloadLength: Int
    public var nextHeader: UInt8
    public var hopLimit: UInt8
    public var source: IPv6Address
    public var destination: IPv6Address

    public init(payloadLength: Int, nextHeader: UInt8, hopLimit: UInt8 = 64, source: IPv6Address, destination: IPv6Address) {
        self.payloadLength = payloadLength
        self.nextHeader = nextHeader
        self.hopLimit = hopLimit
        self.source = source
        self.destination = destination
    }

    public static let length = 40

    /// Writes the 40-byte header at the start of `buffer`.
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.length && payloadLength <= 0xFFFF)
        buffer.setU32(0x6000_0000, at: 0)
        buffer.setU16(UInt16(payloadLength), at: 4)
        buffer[6] = nextHeader
        buffer[7] = hopLimit
        source.write(to: buffer, at: 8)
        destination.write(to: buffer, at: 24)
    }
}

/// ICMPv6 (RFC 4443) and neighbour discovery (RFC 4861) message types.
public enum ICMPv6Type {
    public static let nextHeader: UInt8 = 58
    public static let echoRequest: UInt8 = 128
    public static let echoReply: UInt8 = 129
    public static let neighborSolicitation: UInt8 = 135
    public static let neighborAdvertisement: UInt8 = 136

    /// The checksum over the pseudo-header (RFC 8200 8.1) and `message`;
    /// 0 when a message's own checksum field verifies.
    public static func checksum(_ message: UnsafeRawBufferPointer, source: IPv6Address, destination: IPv6Address) -> UInt16 {
        var sum = InternetChecksum()
        for half in [source.high, source.low, destination.high, destination.low] {
            sum.add(UInt32(truncatingIfNeeded: half >> 32))
            sum.add(UInt32(truncatingIfNeeded: half))
        }
        sum.add(UInt32(message.count))
        sum.add(UInt32(nextHeader))
        sum.add(message)
        return sum.value
    }
}
