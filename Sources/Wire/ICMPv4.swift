/// ICMPv4 message types this stack speaks (RFC 792).
public enum ICMPv4Type {
    public static let echoReply: UInt8 = 0
    public static let destinationUnreachable: UInt8 = 3
    public static let echoRequest: UInt8 = 8
    public static let timeExceeded: UInt8 = 11
    public static let parameterProblem: UInt8 = 12

    /// True for the error messages of RFC 1122 3.2.2, to which no error may answer.
    @inlinable
    public static func isError(_ type: UInt8) -> Bool {
        type == destinationUnreachable || type == timeExceeded || type == parameterProblem
            || type == 4 /* source quench */ || type == 5 /* redirect */
    }
}

/// Destination-unreachable codes (RFC 792, RFC 1122 3.2.2.1).
public enum ICMPv4UnreachableCode {
    public static let network: UInt8 = 0
    public static let host: UInt8 = 1
    public static let proto: UInt8 = 2
    public static let port: UInt8 = 3
    public static let fragmentationNeeded: UInt8 = 4
}

/// A checked, zero-copy view of an ICMPv4 message.
public struct ICMPv4MessageView {
    public enum Field {
        public static let type = 0
        public static let code = 1
        public static let checksum = 2
        public static let restOfHeader = 4
    }
    public static let headerLength = 8

    public let bytes: UnsafeRawBufferPointer

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength else { throw .truncated }
        self.bytes = bytes
    }

    @inlinable public var type: UInt8 { bytes[Field.type] }
    @inlinable public var code: UInt8 { bytes[Field.code] }
    @inlinable public var checksum: UInt16 { bytes.u16(at: Field.checksum) }
    @inlinable public var restOfHeader: UInt32 { bytes.u32(at: Field.restOfHeader) }
    /// Echo identifier (meaningful for echo request and reply).
    @inlinable public var identifier: UInt16 { bytes.u16(at: 4) }
    /// Echo sequence number (meaningful for echo request and reply).
    @inlinable public var sequenceNumber: UInt16 { bytes.u16(at: 6) }
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[Self.headerLength...]) }
    @inlinable public var checksumIsValid: Bool {
        var sum = InternetChecksum()
        sum.add(bytes)
        return sum.verifies
    }
}

/// The ICMPv4 header as a plain value; the payload is kept beside it by the caller.
public struct ICMPv4Header: Hashable, Sendable {
    public static let length = 8

    public var type: UInt8
    public var code: UInt8
    /// The second 32-bit word: identifier and sequence for echo, unused or
    /// next-hop MTU for errors.
    public var restOfHeader: UInt32

    public init(type: UInt8, code: UInt8, restOfHeader: UInt32 = 0) {
        self.type = type
        self.code = code
        self.restOfHeader = restOfHeader
    }

    public static func echo(request: Bool, identifier: UInt16, sequenceNumber: UInt16) -> ICMPv4Header {
        ICMPv4Header(type: request ? ICMPv4Type.echoRequest : ICMPv4Type.echoReply, code: 0,
                     restOfHeader: UInt32(identifier) << 16 | UInt32(sequenceNumber))
    }

    /// Parses the view and verifies the checksum over the whole message.
    @inlinable
    public init(_ view: ICMPv4MessageView) throws(WireError) {
        guard view.checksumIsValid else { throw .badChecksum }
        self.init(type: view.type, code: view.code, restOfHeader: view.restOfHeader)
    }

    /// Writes the header into the first 8 bytes of `message`, whose remainder
    /// already holds the payload, and fills in the checksum over all of it.
    @inlinable
    public func emit(intoMessage message: UnsafeMutableRawBufferPointer) {
        precondition(message.count >= Self.length)
        message[0] = type
        message[1] = code
        message.setU16(0, at: 2)
        message.setU32(restOfHeader, at: 4)
        message.setU16(InternetChecksum.compute(UnsafeRawBufferPointer(message)), at: 2)
    }
}

/// A checked view of the datagram an ICMP error quotes: its IPv4 header and
/// at least the first 8 bytes of its payload (RFC 792), enough to find the
/// transport ports. The quoted total length is not checked against the bytes.
public struct ICMPv4QuotedDatagramView {
    public let bytes: UnsafeRawBufferPointer

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= IPv4PacketView.minimumHeaderLength else { throw .truncated }
        guard bytes[0] >> 4 == 4 else { throw .badVersion }
        let headerLength = Int(bytes[0] & 0x0F) * 4
        guard headerLength >= IPv4PacketView.minimumHeaderLength else { throw .badHeaderLength }
        guard bytes.count >= headerLength + 8 else { throw .truncated }
        self.bytes = bytes
    }

    @inlinable public var headerLength: Int { Int(bytes[0] & 0x0F) * 4 }
    @inlinable public var proto: IPProtocol { IPProtocol(rawValue: bytes[IPv4PacketView.Field.proto]) }
    @inlinable public var source: IPv4Address { IPv4Address(reading: bytes, at: IPv4PacketView.Field.source) }
    @inlinable public var destination: IPv4Address { IPv4Address(reading: bytes, at: IPv4PacketView.Field.destination) }
    /// For UDP (and TCP): the quoted source port.
    @inlinable public var sourcePort: UInt16 { bytes.u16(at: headerLength) }
    /// For UDP (and TCP): the quoted destination port.
    @inlinable public var destinationPort: UInt16 { bytes.u16(at: headerLength + 2) }
}
