/// ARP operation codes (RFC 826).
public enum ARPOperation: UInt16, Sendable {
    case request = 1
    case reply = 2
}

/// A checked, zero-copy view of an ARP packet of any hardware/protocol type.
///
/// The initializer checks that the addresses the header's lengths announce fit.
public struct ARPPacketView {
    public enum Field {
        public static let hardwareType = 0
        public static let protocolType = 2
        public static let hardwareLength = 4
        public static let protocolLength = 5
        public static let operation = 6
        public static let senderHardware = 8
    }
    public static let fixedLength = 8

    public let bytes: UnsafeRawBufferPointer

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.fixedLength else { throw .truncated }
        let total = Self.fixedLength + 2 * (Int(bytes[Field.hardwareLength]) + Int(bytes[Field.protocolLength]))
        guard bytes.count >= total else { throw .truncated }
        self.bytes = bytes
    }

    @inlinable public var hardwareType: UInt16 { bytes.u16(at: Field.hardwareType) }
    @inlinable public var protocolType: UInt16 { bytes.u16(at: Field.protocolType) }
    @inlinable public var hardwareLength: Int { Int(bytes[Field.hardwareLength]) }
    @inlinable public var protocolLength: Int { Int(bytes[Field.protocolLength]) }
    @inlinable public var operation: UInt16 { bytes.u16(at: Field.operation) }
    /// Length of the packet as its header describes it (without Ethernet padding).
    @inlinable public var length: Int { Self.fixedLength + 2 * (hardwareLength + protocolLength) }
}

/// An Ethernet/IPv4 ARP packet as a plain value (RFC 826).
public struct ARPPacket: Hashable, Sendable {
    public static let hardwareTypeEthernet: UInt16 = 1
    /// Length of an Ethernet/IPv4 ARP packet.
    public static let length = 28

    public var operation: ARPOperation
    public var senderMAC: MACAddress
    public var senderIP: IPv4Address
    public var targetMAC: MACAddress
    public var targetIP: IPv4Address

    public init(operation: ARPOperation, senderMAC: MACAddress, senderIP: IPv4Address,
                targetMAC: MACAddress, targetIP: IPv4Address) {
        self.operation = operation
        self.senderMAC = senderMAC
        self.senderIP = senderIP
        self.targetMAC = targetMAC
        self.targetIP = targetIP
    }

    /// Parses an Ethernet/IPv4 ARP packet; other hardware or protocol types,
    /// address lengths or operations throw `.unsupported`.
    @inlinable
    public init(_ view: ARPPacketView) throws(WireError) {
        guard view.hardwareType == Self.hardwareTypeEthernet,
              view.protocolType == EtherType.ipv4.rawValue,
              view.hardwareLength == 6, view.protocolLength == 4,
              let operation = ARPOperation(rawValue: view.operation) else { throw .unsupported }
        let b = view.bytes
        self.init(operation: operation,
                  senderMAC: MACAddress(reading: b, at: 8), senderIP: IPv4Address(reading: b, at: 14),
                  targetMAC: MACAddress(reading: b, at: 18), targetIP: IPv4Address(reading: b, at: 24))
    }

    /// Writes the 28-byte packet at the start of `buffer`.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.length)
        buffer.setU16(Self.hardwareTypeEthernet, at: 0)
        buffer.setU16(EtherType.ipv4.rawValue, at: 2)
        buffer[4] = 6
        buffer[5] = 4
        buffer.setU16(operation.rawValue, at: 6)
        senderMAC.write(to: buffer, at: 8)
        senderIP.write(to: buffer, at: 14)
        targetMAC.write(to: buffer, at: 18)
        targetIP.write(to: buffer, at: 24)
    }
}
