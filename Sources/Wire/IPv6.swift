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

    /// ff02::2, every router on the link.
    public static let allRouters = IPv6Address(high: 0xFF02_0000_0000_0000, low: 2)

    public var isUnspecified: Bool { high == 0 && low == 0 }
    public var isLoopback: Bool { high == 0 && low == 1 }
    /// ::ffff:a.b.c.d, an IPv4 address as an IPv6 one (RFC 4291 2.5.5.2).
    public var isIPv4Mapped: Bool { high == 0 && low >> 32 == 0xFFFF }
    /// The IPv4 address of a v4-mapped address.
    public var mappedIPv4: IPv4Address? { isIPv4Mapped ? IPv4Address(rawValue: UInt32(truncatingIfNeeded: low)) : nil }
    /// ::ffff:a.b.c.d for an IPv4 address.
    public init(mapping address: IPv4Address) { self.init(high: 0, low: 0xFFFF_0000_0000 | UInt64(address.rawValue)) }

    /// Whether the first `prefixLength` bits equal `prefix`'s.
    public func hasPrefix(_ prefix: IPv6Address, length prefixLength: Int) -> Bool {
        func mask(_ bits: Int) -> UInt64 { bits <= 0 ? 0 : bits >= 64 ? .max : ~(UInt64.max >> UInt64(bits)) }
        return (high ^ prefix.high) & mask(prefixLength) == 0 && (low ^ prefix.low) & mask(prefixLength - 64) == 0
    }

    /// `prefix`'s first 64 bits with an interface identifier (RFC 4862 5.5.3 d).
    public init(prefix: IPv6Address, interfaceIdentifier: UInt64) { self.init(high: prefix.high, low: interfaceIdentifier) }
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

    /// Parses RFC 4291 2.2 text: eight hex groups, one `::` for a run of
    /// zero groups, optionally a dotted IPv4 address as the last 32 bits.
    public init?(_ text: String) {
        let halves = text.split(separator: "::", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard !text.isEmpty, halves.count <= 2, !(halves.count == 2 && halves[1].contains("::")) else { return nil }
        func groups(_ part: String, last: Bool) -> [UInt16]? {
            guard !part.isEmpty else { return [] }
            var result: [UInt16] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if last, index == pieces.count - 1, piece.contains(".") {
                    guard let v4 = IPv4Address(String(piece)) else { return nil }
                    result += [UInt16(v4.rawValue >> 16), UInt16(truncatingIfNeeded: v4.rawValue)]
                } else {
                    guard (1...4).contains(piece.count), let value = UInt16(piece, radix: 16) else { return nil }
                    result.append(value)
                }
            }
            return result
        }
        guard let head = groups(halves[0], last: halves.count == 1) else { return nil }
        var all = head
        if halves.count == 2 {
            guard let tail = groups(halves[1], last: true), head.count + tail.count <= 7 else { return nil }
            all += [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard all.count == 8 else { return nil }
        let fold = { (slice: ArraySlice<UInt16>) in slice.reduce(UInt64(0)) { $0 << 16 | UInt64($1) } }
        self.init(high: fold(all[0..<4]), low: fold(all[4..<8]))
    }

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

    public var trafficClass: UInt8

    public init(payloadLength: Int, nextHeader: UInt8, hopLimit: UInt8 = 64, trafficClass: UInt8 = 0,
                source: IPv6Address, destination: IPv6Address) {
        self.trafficClass = trafficClass
        self.payloadLength = payloadLength
        self.nextHeader = nextHeader
        self.hopLimit = hopLimit
        self.source = source
        self.destination = destination
    }

    public static let length = 40

    /// The upper-layer checksum's starting sum over the pseudo-header (RFC 8200 8.1).
    @inlinable
    public static func pseudoHeaderSum(source: IPv6Address, destination: IPv6Address, length: Int, nextHeader: UInt8) -> InternetChecksum {
        var sum = InternetChecksum()
        // Each 64-bit half as two 32-bit words (no array: this runs per datagram).
        sum.add(UInt32(truncatingIfNeeded: source.high >> 32)); sum.add(UInt32(truncatingIfNeeded: source.high))
        sum.add(UInt32(truncatingIfNeeded: source.low >> 32)); sum.add(UInt32(truncatingIfNeeded: source.low))
        sum.add(UInt32(truncatingIfNeeded: destination.high >> 32)); sum.add(UInt32(truncatingIfNeeded: destination.high))
        sum.add(UInt32(truncatingIfNeeded: destination.low >> 32)); sum.add(UInt32(truncatingIfNeeded: destination.low))
        sum.add(UInt32(length))
        sum.add(UInt32(nextHeader))
        return sum
    }

    /// Writes the 40-byte header at the start of `buffer`.
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.length && payloadLength <= 0xFFFF)
        buffer.setU32(0x6000_0000 | UInt32(trafficClass) << 20, at: 0)
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
    public static let destinationUnreachable: UInt8 = 1
    public static let packetTooBig: UInt8 = 2
    public static let timeExceeded: UInt8 = 3
    public static let parameterProblem: UInt8 = 4
    public static let routerSolicitation: UInt8 = 133
    public static let routerAdvertisement: UInt8 = 134
    public static let neighborSolicitation: UInt8 = 135
    public static let neighborAdvertisement: UInt8 = 136

    /// Types below 128 are errors (RFC 4443 2.1).
    @inlinable public static func isError(_ type: UInt8) -> Bool { type < 128 }

    /// Destination unreachable codes (RFC 4443 3.1).
    public enum UnreachableCode {
        public static let noRoute: UInt8 = 0
        public static let address: UInt8 = 3
        public static let port: UInt8 = 4
    }

    /// Parameter problem codes (RFC 4443 3.4, RFC 7112).
    public enum ParameterProblemCode {
        public static let erroneousHeaderField: UInt8 = 0
        public static let unrecognizedNextHeader: UInt8 = 1
        public static let unrecognizedOption: UInt8 = 2
        public static let incompleteHeaderChain: UInt8 = 3
    }

    /// The checksum over the pseudo-header (RFC 8200 8.1) and `message`;
    /// 0 when a message's own checksum field verifies.
    public static func checksum(_ message: UnsafeRawBufferPointer, source: IPv6Address, destination: IPv6Address) -> UInt16 {
        var sum = IPv6Header.pseudoHeaderSum(source: source, destination: destination, length: message.count, nextHeader: nextHeader)
        sum.add(message)
        return sum.value
    }
}
