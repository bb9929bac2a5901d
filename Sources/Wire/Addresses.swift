/// A 48-bit Ethernet MAC address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The address in the low 48 bits, first octet most significant.
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue & 0xFFFF_FFFF_FFFF }

    /// Creates an address from exactly six octets.
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8, _ e: UInt8, _ f: UInt8) {
        self.init(rawValue: UInt64(a) << 40 | UInt64(b) << 32 | UInt64(c) << 24
            | UInt64(d) << 16 | UInt64(e) << 8 | UInt64(f))
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (also `-` separated); nil when malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let pieces = parts.count == 6 ? parts : text.split(separator: "-", omittingEmptySubsequences: false)
        guard pieces.count == 6 else { return nil }
        var value: UInt64 = 0
        for piece in pieces {
            guard (1...2).contains(piece.count), let octet = UInt8(piece, radix: 16) else { return nil }
            value = value << 8 | UInt64(octet)
        }
        self.init(rawValue: value)
    }

    /// Reads six octets at `offset`. The caller has checked the bounds.
    @inlinable
    public init(reading bytes: UnsafeRawBufferPointer, at offset: Int) {
        var value: UInt64 = 0
        for i in 0..<6 { value = value << 8 | UInt64(bytes[offset + i]) }
        self.rawValue = value
    }

    /// Writes six octets at `offset`. The caller has checked the bounds.
    @inlinable
    public func write(to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        for i in 0..<6 { bytes[offset + i] = UInt8(truncatingIfNeeded: rawValue >> UInt64(40 - 8 * i)) }
    }

    public static let broadcast = MACAddress(rawValue: 0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(rawValue: 0)

    public var isBroadcast: Bool { self == .broadcast }
    /// The group bit (I/G) of the first octet; broadcast is also multicast.
    public var isMulticast: Bool { rawValue & (1 << 40) != 0 }

    public var octets: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: rawValue >> UInt64(40 - 8 * $0)) } }

    public var description: String {
        octets.map { let s = String($0, radix: 16); return s.count == 1 ? "0" + s : s }.joined(separator: ":")
    }
}

/// An IPv4 address, held as a host-order integer.
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad text (`192.0.2.2`); nil when malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCII),
                  let octet = UInt8(part, radix: 10) else { return nil }
            value = value << 8 | UInt32(octet)
        }
        rawValue = value
    }

    /// Reads four octets in network order at `offset`. The caller has checked the bounds.
    @inlinable
    public init(reading bytes: UnsafeRawBufferPointer, at offset: Int) {
        rawValue = UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// Writes four octets in network order at `offset`. The caller has checked the bounds.
    @inlinable
    public func write(to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.storeBytes(of: rawValue.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    public static let any = IPv4Address(rawValue: 0)
    public static let broadcast = IPv4Address(rawValue: 0xFFFF_FFFF)

    public var isUnspecified: Bool { rawValue == 0 }
    public var isLimitedBroadcast: Bool { rawValue == 0xFFFF_FFFF }
    /// 224.0.0.0/4 (RFC 1112).
    public var isMulticast: Bool { rawValue >> 28 == 0xE }
    /// 127.0.0.0/8.
    public var isLoopback: Bool { rawValue >> 24 == 127 }
    /// 240.0.0.0/4 except the limited broadcast: reserved (RFC 1122 3.2.1.3).
    public var isReserved: Bool { rawValue >> 28 == 0xF && !isLimitedBroadcast }

    public var octets: [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: rawValue >> $0) } }

    public var description: String { octets.map(String.init).joined(separator: ".") }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// An interface address with its prefix, as in `192.0.2.2/24`.
public struct IPv4Interface: Hashable, Sendable, CustomStringConvertible {
    public let address: IPv4Address
    public let prefixLength: Int

    /// Nil when the prefix is outside 0...32.
    public init?(address: IPv4Address, prefixLength: Int) {
        guard (0...32).contains(prefixLength) else { return nil }
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `a.b.c.d/len`; nil when malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(String(parts[0])),
              parts[1].count <= 2, parts[1].allSatisfy(\.isASCII),
              let length = Int(parts[1]) else { return nil }
        self.init(address: address, prefixLength: length)
    }

    public var netmask: UInt32 { prefixLength == 0 ? 0 : UInt32.max << UInt32(32 - prefixLength) }
    public var network: IPv4Address { IPv4Address(rawValue: address.rawValue & netmask) }
    /// The directed (subnet) broadcast address; for /31 and /32 there is none, so it is the limited one.
    public var subnetBroadcast: IPv4Address {
        prefixLength >= 31 ? .broadcast : IPv4Address(rawValue: address.rawValue | ~netmask)
    }

    /// True when `other` is on this link.
    public func contains(_ other: IPv4Address) -> Bool {
        other.rawValue & netmask == address.rawValue & netmask
    }

    public var description: String { "\(address)/\(prefixLength)" }
}
