/// IPv6 next-header values of the extension headers (RFC 8200 4) and of
/// "nothing follows".
public enum IPv6NextHeader {
    public static let hopByHopOptions: UInt8 = 0
    public static let routing: UInt8 = 43
    public static let fragment: UInt8 = 44
    public static let noNextHeader: UInt8 = 59
    public static let destinationOptions: UInt8 = 60
    public static let udp: UInt8 = 17
    public static let icmpv6: UInt8 = 58

    /// The upper-layer protocol of an IPv6 packet and where it starts, past the
    /// extension headers (nil when they are cut short, or a later fragment
    /// hides it): what the error rules need to know of a packet being refused.
    public static func upperLayer(of packet: UnsafeRawBufferPointer) -> (UInt8, Int)? {
        var next = packet[IPv6PacketView.Field.nextHeader]
        var offset = IPv6Header.length
        while true {
            switch next {
            case IPv6NextHeader.hopByHopOptions, IPv6NextHeader.destinationOptions, IPv6NextHeader.routing:
                guard offset + 2 <= packet.count else { return nil }
                next = packet[offset]
                offset += (Int(packet[offset + 1]) + 1) * 8
            case IPv6NextHeader.fragment:
                guard let fragment = IPv6FragmentHeader(reading: packet, at: offset), fragment.offset == 0 else { return nil }
                next = fragment.nextHeader
                offset += IPv6FragmentHeader.length
            default:
                return (next, offset)
            }
        }
    }
}

/// The fragment header (RFC 8200 4.5): 8 bytes, offset in 8-byte units.
public struct IPv6FragmentHeader: Equatable, Sendable {
    public static let length = 8
    public var nextHeader: UInt8
    /// Byte offset of this fragment's data in the fragmentable part (a multiple of 8).
    public var offset: Int
    public var moreFragments: Bool
    public var identification: UInt32

    public init(nextHeader: UInt8, offset: Int, moreFragments: Bool, identification: UInt32) {
        self.nextHeader = nextHeader
        self.offset = offset
        self.moreFragments = moreFragments
        self.identification = identification
    }

    /// Reads the header at `offset`; nil when fewer than 8 bytes remain.
    public init?(reading bytes: UnsafeRawBufferPointer, at offset: Int) {
        guard offset >= 0, offset + Self.length <= bytes.count else { return nil }
        nextHeader = bytes[offset]
        let field = bytes.u16(at: offset + 2)
        self.offset = Int(field & 0xFFF8)
        moreFragments = field & 1 != 0
        identification = bytes.u32(at: offset + 4)
    }

    public func emit(into bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes[offset] = nextHeader
        bytes[offset + 1] = 0
        bytes.setU16(UInt16(self.offset & 0xFFF8) | (moreFragments ? 1 : 0), at: offset + 2)
        bytes.setU32(identification, at: offset + 4)
    }
}

/// The options of a hop-by-hop or destination options header (RFC 8200 4.2).
public enum IPv6Option {
    public static let pad1: UInt8 = 0
    public static let padN: UInt8 = 1

    /// What to do with an option of an unrecognised type: its two high bits (RFC 8200 4.2).
    public enum UnrecognizedAction: Equatable, Sendable {
        /// 00: skip it.
        case skip
        /// 01: discard the packet.
        case discard
        /// 10: discard, and send parameter problem code 2 even to a multicast destination.
        case discardAndReport
        /// 11: discard, and send parameter problem code 2 unless the destination was multicast.
        case discardAndReportUnlessMulticast

        public init(optionType: UInt8) {
            switch optionType >> 6 {
            case 0: self = .skip
            case 1: self = .discard
            case 2: self = .discardAndReport
            default: self = .discardAndReportUnlessMulticast
            }
        }
    }
}
