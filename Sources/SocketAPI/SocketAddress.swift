import Wire

/// An IPv4 or IPv6 address and UDP port, like `sockaddr_in` / `sockaddr_in6`.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    /// The IPv4 address (unspecified for an IPv6 socket address).
    public var address: IPv4Address
    /// The IPv6 address; nil for an IPv4 socket address.
    public var ipv6: IPv6Address?
    /// The UDP port.
    public var port: UInt16

    /// An address and port, e.g. `SocketAddress(IPv4Address(192, 0, 2, 1), 9000)`.
    public init(_ address: IPv4Address, _ port: UInt16) {
        self.address = address
        self.ipv6 = nil
        self.port = port
    }

    /// An IPv6 address and port. A v4-mapped address (::ffff:a.b.c.d) is
    /// taken as the IPv4 address it maps, as a dual-stack socket does.
    public init(_ address: IPv6Address, _ port: UInt16) {
        self.init(address.mappedIPv4 ?? .any, port)
        if !address.isIPv4Mapped { ipv6 = address }
    }

    /// True for an IPv6 socket address.
    public var isIPv6: Bool { ipv6 != nil }

    /// Parses `a.b.c.d:port` or `[x:x::x]:port`.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        let host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") {
            guard let address = IPv6Address(String(host.dropFirst().dropLast())) else { return nil }
            self.init(address, port)
        } else {
            guard let address = IPv4Address(String(host)) else { return nil }
            self.init(address, port)
        }
    }

    public var description: String { ipv6.map { "[\($0)]:\(port)" } ?? "\(address):\(port)" }
}

/// The address family of a socket.
public enum AddressFamily: Sendable, Equatable {
    /// AF_INET.
    case ipv4
    /// AF_INET6: IPv6, and IPv4 too unless IPv6-only.
    case ipv6
}
