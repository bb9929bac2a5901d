import Wire

/// The blocks of a pcapng file (draft-ietf-opsawg-pcapng): a section header,
/// one interface description, and an enhanced packet block per frame, in the
/// host's byte order (readers learn it from the section's byte-order magic).
///
/// What classic pcap cannot say and pcapng can: the interface's name,
/// addresses and MAC, each frame's direction (`epb_flags`), and a comment on
/// a frame, which tapstack uses for the reason the stack dropped it.
public enum PcapngFormat {
    /// The interface a capture describes (its Interface Description Block).
    public struct Interface: Sendable, Equatable {
        public var name: String
        public var description: String
        public var address: IPv4Address?
        public var netmask: IPv4Address?
        public var mac: MACAddress?

        public init(name: String, description: String, address: IPv4Address? = nil, netmask: IPv4Address? = nil,
                    mac: MACAddress? = nil) {
            self.name = name
            self.description = description
            self.address = address
            self.netmask = netmask
            self.mac = mac
        }
    }

    static let sectionHeaderType: UInt32 = 0x0A0D_0D0A
    static let interfaceDescriptionType: UInt32 = 1
    static let enhancedPacketType: UInt32 = 6
    static let byteOrderMagic: UInt32 = 0x1A2B_3C4D
    /// LINKTYPE_ETHERNET.
    static let linkTypeEthernet: UInt16 = 1
    /// LINKTYPE_RAW: IP packets without a link header (a TUN device).
    static let linkTypeRaw: UInt16 = 101

    /// The Section Header Block, naming the application that wrote the file.
    public static func sectionHeader(application: String) -> [UInt8] {
        var body: [UInt8] = []
        append32(byteOrderMagic, to: &body)
        append16(1, to: &body)  // major version
        append16(0, to: &body)  // minor version
        append64(UInt64.max, to: &body)  // section length: not given
        appendOption(4, Array(application.utf8), to: &body)  // shb_userappl
        appendEndOfOptions(to: &body)
        return block(sectionHeaderType, body)
    }

    /// The Interface Description Block: Ethernet, microsecond timestamps.
    public static func interfaceDescription(_ interface: Interface, snapLength: Int, rawIP: Bool = false) -> [UInt8] {
        var body: [UInt8] = []
        append16(rawIP ? linkTypeRaw : linkTypeEthernet, to: &body)
        append16(0, to: &body)
        append32(UInt32(snapLength), to: &body)
        appendOption(2, Array(interface.name.utf8), to: &body)         // if_name
        appendOption(3, Array(interface.description.utf8), to: &body)  // if_description
        if let address = interface.address {
            appendOption(4, address.octets + (interface.netmask ?? IPv4Address(255, 255, 255, 255)).octets, to: &body)  // if_IPv4addr
        }
        if let mac = interface.mac { appendOption(6, mac.octets, to: &body) }  // if_MACaddr
        appendOption(9, [6], to: &body)  // if_tsresol: 10^-6 s
        appendEndOfOptions(to: &body)
        return block(interfaceDescriptionType, body)
    }

    /// An Enhanced Packet Block for `frame` (already cut to the snap length)
    /// on interface 0, with its direction and, when given, a comment.
    public static func enhancedPacket(_ frame: UnsafeRawBufferPointer, originalLength: Int, microseconds: UInt64,
                                      direction: FrameDirection?, comment: String?) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(32 + frame.count + (comment?.utf8.count ?? 0))
        append32(0, to: &body)  // interface id
        append32(UInt32(truncatingIfNeeded: microseconds >> 32), to: &body)
        append32(UInt32(truncatingIfNeeded: microseconds), to: &body)
        append32(UInt32(frame.count), to: &body)
        append32(UInt32(max(originalLength, frame.count)), to: &body)
        body.append(contentsOf: frame)
        pad(&body)
        if let comment { appendOption(1, Array(comment.utf8), to: &body) }  // opt_comment
        if let direction {
            var flags: [UInt8] = []
            append32(direction == .inbound ? 1 : 2, to: &flags)  // epb_flags bits 0-1: 01 inbound, 10 outbound
            appendOption(2, flags, to: &body)
        }
        if comment != nil || direction != nil { appendEndOfOptions(to: &body) }
        return block(enhancedPacketType, body)
    }

    // MARK: Reading

    /// The first interface described in pcapng `bytes` (the start of a file:
    /// its section header, then its interface description), or nil when
    /// they are not pcapng in this host's byte order or describe none.
    public static func firstInterface(in bytes: [UInt8]) -> Interface? {
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) | UInt32(u16(at + 2)) << 16 }
        guard bytes.count >= 28, u32(0) == sectionHeaderType, u32(8) == byteOrderMagic else { return nil }
        var offset = 0
        while offset + 12 <= bytes.count {
            let type = u32(offset), length = Int(u32(offset + 4))
            guard length >= 12, length % 4 == 0, offset + length <= bytes.count else { return nil }
            if type == interfaceDescriptionType {
                guard length >= 20 else { return nil }
                var interface = Interface(name: "", description: "")
                var option = offset + 16
                let end = offset + length - 4
                while option + 4 <= end {
                    let code = u16(option), size = Int(u16(option + 2))
                    let value = option + 4
                    guard code != 0, value + size <= end else { break }
                    let field = Array(bytes[value..<value + size])
                    switch code {
                    case 2: interface.name = String(decoding: field, as: UTF8.self)
                    case 3: interface.description = String(decoding: field, as: UTF8.self)
                    case 4 where size == 8:
                        interface.address = IPv4Address(field[0], field[1], field[2], field[3])
                        interface.netmask = IPv4Address(field[4], field[5], field[6], field[7])
                    case 6 where size == 6:
                        interface.mac = MACAddress(field[0], field[1], field[2], field[3], field[4], field[5])
                    default: break
                    }
                    option = value + (size + 3) / 4 * 4
                }
                return interface
            }
            offset += length
        }
        return nil
    }

    // MARK: Encoding

    private static func block(_ type: UInt32, _ body: [UInt8]) -> [UInt8] {
        let total = UInt32(12 + body.count)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(total))
        append32(type, to: &bytes)
        append32(total, to: &bytes)
        bytes += body
        append32(total, to: &bytes)
        return bytes
    }

    private static func appendOption(_ code: UInt16, _ value: [UInt8], to bytes: inout [UInt8]) {
        append16(code, to: &bytes)
        append16(UInt16(value.count), to: &bytes)
        bytes += value
        pad(&bytes)
    }

    private static func appendEndOfOptions(to bytes: inout [UInt8]) { append32(0, to: &bytes) }

    private static func pad(_ bytes: inout [UInt8]) {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    private static func append16(_ value: UInt16, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value) { bytes += $0 }
    }

    private static func append32(_ value: UInt32, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value) { bytes += $0 }
    }

    private static func append64(_ value: UInt64, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value) { bytes += $0 }
    }
}
