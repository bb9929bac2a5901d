/// Why a frame or header failed to parse. Each case maps to one drop counter.
public enum WireError: Error, Equatable, Sendable {
    /// The buffer is shorter than the header or than a length field claims.
    case truncated
    /// A length field is inconsistent (smaller than its header, or beyond the buffer).
    case badLength
    /// A checksum did not verify.
    case badChecksum
    /// A version field we do not speak (e.g. IPv4 version != 4).
    case badVersion
    /// The IPv4 header length (IHL) is below 5 words or beyond the packet.
    case badHeaderLength
    /// Well-formed, but a type this stack does not handle (e.g. ARP for non-Ethernet).
    case unsupported
}
