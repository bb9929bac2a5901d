import Wire

/// An IPv4 address and UDP port, like `sockaddr_in`.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var port: UInt16

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
