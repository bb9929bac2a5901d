/// IGMP message types (RFC 1112, RFC 2236, RFC 3376).
public enum IGMPType {
    public static let membershipQuery: UInt8 = 0x11
    public static let version1Report: UInt8 = 0x12
    public static let version2Report: UInt8 = 0x16
    public static let leaveGroup: UInt8 = 0x17
    public static let version3Report: UInt8 = 0x22
}

/// IGMPv3 group record types (RFC 3376 4.2.12).
public enum IGMPRecordType {
    public static let modeIsInclude: UInt8 = 1
    public static let modeIsExclude: UInt8 = 2
    public static let changeToInclude: UInt8 = 3
    public static let changeToExclude: UInt8 = 4
    public static let allowNewSources: UInt8 = 5
    public static let blockOldSources: UInt8 = 6
}

/// Well-known IPv4 multicast groups.
extension IPv4Address {
    /// 224.0.0.1: every host; joined implicitly, never reported (RFC 2236 6).
    public static let allHosts = IPv4Address(224, 0, 0, 1)
    /// 224.0.0.2: every router; where IGMPv2 leaves go.
    public static let allRouters = IPv4Address(224, 0, 0, 2)
    /// 224.0.0.22: where IGMPv3 reports go.
    public static let igmpv3Routers = IPv4Address(224, 0, 0, 22)

    /// The Ethernet address a multicast group maps to: 01:00:5e and the
    /// group's low 23 bits (RFC 1112 6.4).
    public var multicastMAC: MACAddress {
        MACAddress(rawValue: 0x01_00_5E_00_00_00 | UInt64(rawValue & 0x7F_FFFF))
    }
}

/// A checked, zero-copy view of an IGMP message of any version.
///
/// The checking initializer proves the 8 bytes every version shares; a
/// version 3 query (12 bytes or more, RFC 3376 7.1) also proves its source list.
public struct IGMPMessageView {
    public enum Field {
        public static let type = 0
        public static let maxResponseCode = 1
        public static let checksum = 2
        public static let group = 4
        /// IGMPv3 query: S flag and QRV.
        public static let flags = 8
        public static let queryIntervalCode = 9
        public static let sourceCount = 10
        public static let sources = 12
    }
    public static let minimumLength = 8
    /// A query this long or longer is version 3 (RFC 3376 7.1).
    public static let version3QueryLength = 12

    public let bytes: UnsafeRawBufferPointer

    /// - Throws: `.truncated` below 8 bytes, or for a version 3 query whose
    ///   source list runs past the end; `.badLength` for a 9 to 11 byte query,
    ///   which RFC 3376 7.1 says to ignore.
    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.minimumLength else { throw .truncated }
        if bytes[Field.type] == IGMPType.membershipQuery && bytes.count > Self.minimumLength {
            guard bytes.count >= Self.version3QueryLength else { throw .badLength }
            let sources = Int(bytes.u16(at: Field.sourceCount))
            guard bytes.count >= Field.sources + 4 * sources else { throw .truncated }
        }
        self.bytes = bytes
    }

    @inlinable public var type: UInt8 { bytes[Field.type] }
    @inlinable public var maxResponseCode: UInt8 { bytes[Field.maxResponseCode] }
    @inlinable public var checksum: UInt16 { bytes.u16(at: Field.checksum) }
    @inlinable public var group: IPv4Address { IPv4Address(reading: bytes, at: Field.group) }
    @inlinable public var checksumIsValid: Bool {
        var sum = InternetChecksum()
        sum.add(bytes)
        return sum.verifies
    }

    /// For a query: 1, 2 or 3 (RFC 3376 7.1: 8 bytes with code 0 is version 1).
    @inlinable public var queryVersion: Int {
        bytes.count >= Self.version3QueryLength ? 3 : maxResponseCode == 0 ? 1 : 2
    }

    /// For a version 3 query: the sources it asks about.
    public var querySources: [IPv4Address] {
        guard type == IGMPType.membershipQuery, bytes.count >= Self.version3QueryLength else { return [] }
        return (0..<Int(bytes.u16(at: Field.sourceCount))).map { IPv4Address(reading: bytes, at: Field.sources + 4 * $0) }
    }

    /// The most a host may wait before answering a query, in tenths of a
    /// second: version 1 queries mean 10 s (RFC 2236 4), version 3 codes of
    /// 128 and above are floating point (RFC 3376 4.1.1).
    public var maxResponseDeciseconds: Int {
        let code = Int(maxResponseCode)
        switch queryVersion {
        case 1: return 100
        case 2: return code
        default:
            guard code >= 128 else { return code }
            return ((code & 0x0F) | 0x10) << (((code >> 4) & 0x07) + 3)
        }
    }
}

/// An IGMPv3 group record (RFC 3376 4.2.4).
public struct IGMPGroupRecord: Equatable, Sendable {
    public var type: UInt8
    public var group: IPv4Address
    public var sources: [IPv4Address]

    public init(type: UInt8, group: IPv4Address, sources: [IPv4Address] = []) {
        self.type = type
        self.group = group
        self.sources = sources
    }

    /// Bytes the record takes in a report.
    public var length: Int { 8 + 4 * sources.count }
}

/// An IGMP report or leave as a plain value, for sending.
public enum IGMPReport: Equatable, Sendable {
    /// A version 2 membership report (RFC 2236 2), sent to the group.
    case version2(group: IPv4Address)
    /// A version 2 leave (RFC 2236 2), sent to 224.0.0.2.
    case leave(group: IPv4Address)
    /// A version 3 membership report (RFC 3376 4.2), sent to 224.0.0.22.
    case version3(records: [IGMPGroupRecord])

    /// Bytes `emit` writes.
    public var length: Int {
        switch self {
        case .version2, .leave: 8
        case .version3(let records): 8 + records.reduce(0) { $0 + $1.length }
        }
    }

    /// The IP destination RFC 2236 and RFC 3376 give each kind.
    public var destination: IPv4Address {
        switch self {
        case .version2(let group): group
        case .leave: .allRouters
        case .version3: .igmpv3Routers
        }
    }

    /// Bytes of the IPv4 header `emitPacket` writes: 20 and the 4-byte Router Alert option.
    public static let ipHeaderLength = 24

    /// Writes the whole IPv4 packet: a header with TTL 1, TOS 0xC0 (as
    /// Linux sends IGMP) and the Router Alert option (RFC 2113; RFC 2236 2,
    /// RFC 3376 4), then the message. `version1` writes a version 2 report
    /// as a version 1 one (RFC 2236 4). Returns the packet's length.
    @discardableResult
    public func emitPacket(into buffer: UnsafeMutableRawBufferPointer, source: IPv4Address, identification: UInt16,
                           version1: Bool = false) -> Int {
        let packetLength = Self.ipHeaderLength + length
        precondition(buffer.count >= packetLength)
        buffer[0] = 0x46
        buffer[1] = 0xC0
        buffer.setU16(UInt16(packetLength), at: 2)
        buffer.setU16(identification, at: 4)
        buffer.setU16(0x4000, at: 6)
        buffer[8] = 1
        buffer[9] = IPProtocol.igmp.rawValue
        buffer.setU16(0, at: 10)
        source.write(to: buffer, at: 12)
        destination.write(to: buffer, at: 16)
        buffer.setU32(0x9404_0000, at: 20)
        buffer.setU16(InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: buffer[0..<Self.ipHeaderLength])), at: 10)
        let message = UnsafeMutableRawBufferPointer(rebasing: buffer[Self.ipHeaderLength..<packetLength])
        emit(into: message)
        if version1, case .version2 = self {
            message[0] = IGMPType.version1Report
            message.setU16(0, at: 2)
            message.setU16(InternetChecksum.compute(UnsafeRawBufferPointer(message)), at: 2)
        }
        return packetLength
    }

    /// Writes the message, checksum included, at the start of `buffer`.
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= length)
        UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]).initializeMemory(as: UInt8.self, repeating: 0)
        switch self {
        case .version2(let group):
            buffer[0] = IGMPType.version2Report
            group.write(to: buffer, at: 4)
        case .leave(let group):
            buffer[0] = IGMPType.leaveGroup
            group.write(to: buffer, at: 4)
        case .version3(let records):
            buffer[0] = IGMPType.version3Report
            buffer.setU16(UInt16(records.count), at: 6)
            var at = 8
            for record in records {
                buffer[at] = record.type
                buffer.setU16(UInt16(record.sources.count), at: at + 2)
                record.group.write(to: buffer, at: at + 4)
                for (index, source) in record.sources.enumerated() { source.write(to: buffer, at: at + 8 + 4 * index) }
                at += record.length
            }
        }
        let checksum = InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
        buffer.setU16(checksum, at: 2)
    }
}
