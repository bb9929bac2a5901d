/// A checked, zero-copy view of a UDP datagram (RFC 768).
///
/// The initializer checks that the length field is at least 8 and within the
/// buffer; bytes beyond it are excluded. The checksum is verified by
/// `UDPHeader.init(_:source:destination:)`, which needs the IP addresses.
public struct UDPDatagramView {
    public enum Field {
        public static let sourcePort = 0
        public static let destinationPort = 2
        public static let length = 4
        public static let checksum = 6
    }
    public static let headerLength = 8

    /// The datagram, cut to its length field.
    public let datagram: UnsafeRawBufferPointer

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength else { throw .truncated }
        let length = Int(bytes.u16(at: Field.length))
        guard length >= Self.headerLength else { throw .badLength }
        guard length <= bytes.count else { throw .truncated }
        datagram = UnsafeRawBufferPointer(rebasing: bytes[0..<length])
    }

    @inlinable public var sourcePort: UInt16 { datagram.u16(at: Field.sourcePort) }
    @inlinable public var destinationPort: UInt16 { datagram.u16(at: Field.destinationPort) }
    @inlinable public var length: Int { datagram.count }
    @inlinable public var checksum: UInt16 { datagram.u16(at: Field.checksum) }
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: datagram[Self.headerLength...]) }

    /// True when the checksum field is zero (sender computed none) or verifies
    /// over the pseudo-header and datagram.
    @inlinable
    public func checksumIsValid(source: IPv4Address, destination: IPv4Address) -> Bool {
        checksum == 0 || checksumVerifies(pseudoHeader: UDPHeader.pseudoHeaderSum(source: source, destination: destination, length: length))
    }

    /// True when the checksum verifies over IPv6's pseudo-header (RFC 8200
    /// 8.1); a zero checksum is invalid there, and fails.
    @inlinable
    public func checksumIsValid(source: IPv6Address, destination: IPv6Address) -> Bool {
        checksum != 0 && checksumVerifies(pseudoHeader: UDPHeader.pseudoHeaderSum(source: source, destination: destination, length: length))
    }

    @inlinable
    func checksumVerifies(pseudoHeader: InternetChecksum) -> Bool {
        var sum = pseudoHeader
        sum.add(datagram)
        return sum.verifies
    }
}

/// The UDP header as a plain value; the payload is kept beside it by the caller.
public struct UDPHeader: Hashable, Sendable {
    public static let length = 8

    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var payloadLength: Int

    public init(sourcePort: UInt16, destinationPort: UInt16, payloadLength: Int) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.payloadLength = payloadLength
    }

    /// Parses the view and verifies the checksum (`.badChecksum`).
    @inlinable
    public init(_ view: UDPDatagramView, source: IPv4Address, destination: IPv4Address) throws(WireError) {
        guard view.checksumIsValid(source: source, destination: destination) else { throw .badChecksum }
        self.init(sourcePort: view.sourcePort, destinationPort: view.destinationPort,
                  payloadLength: view.length - Self.length)
    }

    /// The checksum's starting sum over the IPv4 pseudo-header.
    @inlinable
    public static func pseudoHeaderSum(source: IPv4Address, destination: IPv4Address, length: Int) -> InternetChecksum {
        var sum = InternetChecksum()
        sum.add(source.rawValue)
        sum.add(destination.rawValue)
        sum.add(UInt16(IPProtocol.udp.rawValue))
        sum.add(UInt16(truncatingIfNeeded: length))
        return sum
    }

    /// The checksum's starting sum over the IPv6 pseudo-header (RFC 8200 8.1).
    @inlinable
    public static func pseudoHeaderSum(source: IPv6Address, destination: IPv6Address, length: Int) -> InternetChecksum {
        IPv6Header.pseudoHeaderSum(source: source, destination: destination, length: length, nextHeader: IPProtocol.udp.rawValue)
    }

    /// Writes the header into the first 8 bytes of `datagram`, whose remainder
    /// already holds the payload, with the checksum always computed
    /// (a computed 0 is sent as 0xFFFF, RFC 768).
    @inlinable
    public func emit(intoDatagram datagram: UnsafeMutableRawBufferPointer, source: IPv4Address, destination: IPv4Address) {
        emit(intoDatagram: datagram, pseudoHeader: Self.pseudoHeaderSum(source: source, destination: destination, length: Self.length + payloadLength))
    }

    /// The same over IPv6.
    @inlinable
    public func emit(intoDatagram datagram: UnsafeMutableRawBufferPointer, source: IPv6Address, destination: IPv6Address) {
        emit(intoDatagram: datagram, pseudoHeader: Self.pseudoHeaderSum(source: source, destination: destination, length: Self.length + payloadLength))
    }

    @inlinable
    func emit(intoDatagram datagram: UnsafeMutableRawBufferPointer, pseudoHeader: InternetChecksum) {
        let length = emitFields(into: datagram)
        datagram.setU16(0, at: 6)
        var sum = pseudoHeader
        sum.add(UnsafeRawBufferPointer(rebasing: datagram[0..<length]))
        let checksum = sum.value
        datagram.setU16(checksum == 0 ? 0xFFFF : checksum, at: 6)
    }

    /// Writes the header into the first 8 bytes of `datagram` with the
    /// checksum left partial: only the pseudo-header sum, for a link that
    /// completes it (`ChecksumOffload.partial`, offset `Field.checksum`).
    /// The payload is not read.
    @inlinable
    public func emitPartial(intoDatagram datagram: UnsafeMutableRawBufferPointer, source: IPv4Address, destination: IPv4Address) {
        emitFields(into: datagram)
        datagram.setU16(~Self.pseudoHeaderSum(source: source, destination: destination, length: Self.length + payloadLength).value, at: 6)
    }

    /// The same over IPv6.
    @inlinable
    public func emitPartial(intoDatagram datagram: UnsafeMutableRawBufferPointer, source: IPv6Address, destination: IPv6Address) {
        emitFields(into: datagram)
        datagram.setU16(~Self.pseudoHeaderSum(source: source, destination: destination, length: Self.length + payloadLength).value, at: 6)
    }

    /// Ports and length; returns the datagram's length.
    @inlinable @discardableResult
    func emitFields(into datagram: UnsafeMutableRawBufferPointer) -> Int {
        let length = Self.length + payloadLength
        precondition(datagram.count >= length && length <= 0xFFFF)
        datagram.setU16(sourcePort, at: 0)
        datagram.setU16(destinationPort, at: 2)
        datagram.setU16(UInt16(length), at: 4)
        return length
    }
}
