/// IP protocol numbers carried in the IPv4 header.
public struct IPProtocol: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let icmp = IPProtocol(rawValue: 1)
    public static let igmp = IPProtocol(rawValue: 2)
    public static let tcp = IPProtocol(rawValue: 6)
    public static let udp = IPProtocol(rawValue: 17)

    public var description: String {
        switch self {
        case .icmp: "ICMP"
        case .igmp: "IGMP"
        case .tcp: "TCP"
        case .udp: "UDP"
        default: "proto \(rawValue)"
        }
    }
}

/// A checked, zero-copy view of an IPv4 packet (RFC 791).
///
/// The initializer checks the version, the header length (IHL ≥ 5 and within
/// the buffer) and the total length (≥ header, ≤ buffer). Bytes after the
/// total length, such as Ethernet padding, are excluded from `packet`.
/// The checksum is not verified here: see `IPv4Header.init(_:)`.
public struct IPv4PacketView {
    public enum Field {
        public static let versionIHL = 0
        public static let tos = 1
        public static let totalLength = 2
        public static let identification = 4
        public static let flagsFragment = 6
        public static let ttl = 8
        public static let proto = 9
        public static let checksum = 10
        public static let source = 12
        public static let destination = 16
    }
    public static let minimumHeaderLength = 20

    /// The packet, cut to its total length.
    public let packet: UnsafeRawBufferPointer

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.minimumHeaderLength else { throw .truncated }
        guard bytes[0] >> 4 == 4 else { throw .badVersion }
        let headerLength = Int(bytes[0] & 0x0F) * 4
        guard headerLength >= Self.minimumHeaderLength else { throw .badHeaderLength }
        guard headerLength <= bytes.count else { throw .truncated }
        let totalLength = Int(bytes.u16(at: Field.totalLength))
        guard totalLength >= headerLength else { throw .badLength }
        guard totalLength <= bytes.count else { throw .truncated }
        packet = UnsafeRawBufferPointer(rebasing: bytes[0..<totalLength])
    }

    @inlinable public var headerLength: Int { Int(packet[0] & 0x0F) * 4 }
    @inlinable public var typeOfService: UInt8 { packet[Field.tos] }
    @inlinable public var totalLength: Int { packet.count }
    @inlinable public var identification: UInt16 { packet.u16(at: Field.identification) }
    @inlinable public var dontFragment: Bool { packet[Field.flagsFragment] & 0x40 != 0 }
    @inlinable public var moreFragments: Bool { packet[Field.flagsFragment] & 0x20 != 0 }
    /// The reserved ("evil") bit, which must be zero.
    @inlinable public var reservedFlag: Bool { packet[Field.flagsFragment] & 0x80 != 0 }
    /// Fragment offset in bytes.
    @inlinable public var fragmentOffset: Int { Int(packet.u16(at: Field.flagsFragment) & 0x1FFF) * 8 }
    @inlinable public var isFragment: Bool { moreFragments || fragmentOffset != 0 }
    @inlinable public var ttl: UInt8 { packet[Field.ttl] }
    @inlinable public var proto: IPProtocol { IPProtocol(rawValue: packet[Field.proto]) }
    @inlinable public var checksum: UInt16 { packet.u16(at: Field.checksum) }
    @inlinable public var source: IPv4Address { IPv4Address(reading: packet, at: Field.source) }
    @inlinable public var destination: IPv4Address { IPv4Address(reading: packet, at: Field.destination) }
    @inlinable public var header: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: packet[0..<headerLength]) }
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: packet[headerLength...]) }
    /// True when the header checksum verifies.
    @inlinable public var checksumIsValid: Bool {
        var sum = InternetChecksum()
        sum.add(header)
        return sum.verifies
    }
}

/// The fields of an IPv4 header without options, as a plain value.
public struct IPv4Header: Hashable, Sendable {
    public static let length = 20

    public var typeOfService: UInt8
    /// Length of the payload that follows the header.
    public var payloadLength: Int
    public var identification: UInt16
    public var dontFragment: Bool
    public var moreFragments: Bool
    /// Offset in bytes; a multiple of 8.
    public var fragmentOffset: Int
    public var ttl: UInt8
    public var proto: IPProtocol
    public var source: IPv4Address
    public var destination: IPv4Address

    public init(typeOfService: UInt8 = 0, payloadLength: Int, identification: UInt16,
                dontFragment: Bool = false, moreFragments: Bool = false, fragmentOffset: Int = 0,
                ttl: UInt8 = 64, proto: IPProtocol, source: IPv4Address, destination: IPv4Address) {
        self.typeOfService = typeOfService
        self.payloadLength = payloadLength
        self.identification = identification
        self.dontFragment = dontFragment
        self.moreFragments = moreFragments
        self.fragmentOffset = fragmentOffset
        self.ttl = ttl
        self.proto = proto
        self.source = source
        self.destination = destination
    }

    /// Parses the view and verifies the header checksum (`.badChecksum`).
    /// Options, if any, are skipped: `payloadLength` excludes them.
    @inlinable
    public init(_ view: IPv4PacketView) throws(WireError) {
        guard view.checksumIsValid else { throw .badChecksum }
        self.init(typeOfService: view.typeOfService,
                  payloadLength: view.totalLength - view.headerLength,
                  identification: view.identification,
                  dontFragment: view.dontFragment, moreFragments: view.moreFragments,
                  fragmentOffset: view.fragmentOffset, ttl: view.ttl, proto: view.proto,
                  source: view.source, destination: view.destination)
    }

    /// Writes the 20-byte header, checksum included, at the start of `buffer`.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.length && payloadLength + Self.length <= 0xFFFF)
        buffer[0] = 0x45
        buffer[1] = typeOfService
        buffer.setU16(UInt16(Self.length + payloadLength), at: 2)
        buffer.setU16(identification, at: 4)
        var flags = UInt16(fragmentOffset / 8) & 0x1FFF
        if dontFragment { flags |= 0x4000 }
        if moreFragments { flags |= 0x2000 }
        buffer.setU16(flags, at: 6)
        buffer[8] = ttl
        buffer[9] = proto.rawValue
        buffer.setU16(0, at: 10)
        source.write(to: buffer, at: 12)
        destination.write(to: buffer, at: 16)
        let checksum = InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: buffer[0..<Self.length]))
        buffer.setU16(checksum, at: 10)
    }
}
