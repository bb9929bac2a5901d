import Wire

/// An IPv4 address and UDP port, like `sockaddr_in`.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    /// The IPv4 address.
    public var address: IPv4Address
    /// The UDP port.
    public var port: UInt16

    /// An address and port, e.g. `SocketAddress(IPv4Address(192, 0, 2, 1), 9000)`.
    public init(_ address: IPv4Address, _ port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Parses `a.b.c.d:port`.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let address = IPv4Address(String(text[..<colon])),
              let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        self.init(address, port)
    }

    public var description: String { "\(address):\(port)" }
}
