/// The virtio-net header (`struct virtio_net_hdr`, 10 bytes, host byte
/// order on a TAP device) that precedes every frame read from or written to
/// a TAP device opened with `IFF_VNET_HDR`: how the frame's checksum and
/// segmentation are to be handled, as a NIC with offloads would be told.
public struct VirtioNetHeader: Hashable, Sendable {
    public static let length = 10

    public enum Field {
        public static let flags = 0
        public static let gsoType = 1
        public static let headerLength = 2
        public static let gsoSize = 4
        public static let checksumStart = 6
        public static let checksumOffset = 8
    }

    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `checksumStart +
    /// checksumOffset` holds the pseudo-header sum; complete it over the
    /// bytes from `checksumStart`.
    public static let needsChecksum: UInt8 = 1
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the sender verified the checksums.
    public static let dataValid: UInt8 = 2

    /// `gso_type` values.
    public enum GSOType {
        public static let none: UInt8 = 0
        public static let tcpv4: UInt8 = 1
        public static let udp: UInt8 = 3
        public static let tcpv6: UInt8 = 4
        /// `VIRTIO_NET_HDR_GSO_UDP_L4`: UDP datagrams of `gsoSize` payload bytes each (Linux 4.18).
        public static let udpL4: UInt8 = 5
        public static let ecn: UInt8 = 0x80
    }

    public var flags: UInt8
    public var gsoType: UInt8
    /// Bytes of headers before the segmented payload; advisory only (never trusted on input).
    public var headerLength: UInt16
    public var gsoSize: UInt16
    public var checksumStart: UInt16
    public var checksumOffset: UInt16

    public init(flags: UInt8 = 0, gsoType: UInt8 = GSOType.none, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Reads the header at the start of `bytes`; nil when shorter than 10 bytes.
    @inlinable
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.length else { return nil }
        flags = bytes[Field.flags]
        gsoType = bytes[Field.gsoType]
        headerLength = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: Field.headerLength, as: UInt16.self))
        gsoSize = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: Field.gsoSize, as: UInt16.self))
        checksumStart = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: Field.checksumStart, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: Field.checksumOffset, as: UInt16.self))
    }

    /// Writes the header into the first 10 bytes of `bytes`.
    @inlinable
    public func emit(into bytes: UnsafeMutableRawPointer) {
        bytes.storeBytes(of: flags, toByteOffset: Field.flags, as: UInt8.self)
        bytes.storeBytes(of: gsoType, toByteOffset: Field.gsoType, as: UInt8.self)
        bytes.storeBytes(of: headerLength.littleEndian, toByteOffset: Field.headerLength, as: UInt16.self)
        bytes.storeBytes(of: gsoSize.littleEndian, toByteOffset: Field.gsoSize, as: UInt16.self)
        bytes.storeBytes(of: checksumStart.littleEndian, toByteOffset: Field.checksumStart, as: UInt16.self)
        bytes.storeBytes(of: checksumOffset.littleEndian, toByteOffset: Field.checksumOffset, as: UInt16.self)
    }

    /// The header for a frame whose checksum is `checksum` (no segmentation).
    @inlinable
    public init(for checksum: ChecksumOffload) {
        if case .partial(let start, let offset) = checksum {
            self.init(flags: Self.needsChecksum, checksumStart: start, checksumOffset: offset)
        } else {
            self.init()
        }
    }
}
