/// The EtherType field of an Ethernet II frame.
public struct EtherType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let ipv4 = EtherType(rawValue: 0x0800)
    public static let arp = EtherType(rawValue: 0x0806)
    public static let ipv6 = EtherType(rawValue: 0x86DD)
    public static let vlan = EtherType(rawValue: 0x8100)

    public var description: String {
        switch self {
        case .ipv4: "IPv4"
        case .arp: "ARP"
        case .ipv6: "IPv6"
        default: "0x" + String(rawValue, radix: 16)
        }
    }
}

/// A checked, zero-copy view of an Ethernet II frame.
///
/// The view borrows its bytes: it must not outlive the buffer it was made from.
public struct EthernetFrameView {
    public enum Field {
        public static let destination = 0
        public static let source = 6
        public static let etherType = 12
    }
    public static let headerLength = 14

    public let bytes: UnsafeRawBufferPointer

    /// Throws `.truncated` when the buffer cannot hold an Ethernet header.
    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength else { throw .truncated }
        self.bytes = bytes
    }

    @inlinable public var destination: MACAddress { MACAddress(reading: bytes, at: Field.destination) }
    @inlinable public var source: MACAddress { MACAddress(reading: bytes, at: Field.source) }
    @inlinable public var etherType: EtherType { EtherType(rawValue: bytes.u16(at: Field.etherType)) }
    /// Everything after the header, including any padding to the 60-byte minimum.
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[Self.headerLength...]) }
}

/// The fields of an Ethernet II header, as a plain value.
public struct EthernetHeader: Hashable, Sendable {
    public var destination: MACAddress
    public var source: MACAddress
    public var etherType: EtherType

    public init(destination: MACAddress, source: MACAddress, etherType: EtherType) {
        self.destination = destination
        self.source = source
        self.etherType = etherType
    }

    public init(_ view: EthernetFrameView) {
        self.init(destination: view.destination, source: view.source, etherType: view.etherType)
    }

    public static let length = EthernetFrameView.headerLength

    /// Writes the 14-byte header at the start of `buffer` (which must hold 14 bytes).
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.length)
        destination.write(to: buffer, at: EthernetFrameView.Field.destination)
        source.write(to: buffer, at: EthernetFrameView.Field.source)
        buffer.setU16(etherType.rawValue, at: EthernetFrameView.Field.etherType)
    }
}
