import CTapstackChannel
import SocketAPI
import Wire

/// The service protocol's address (16 bytes, IPv4 as ::ffff:a.b.c.d) to and
/// from `SocketAddress`; shared with the service, which speaks the same protocol.
extension tsp_address {
    /// The address of `socketAddress`, v4-mapped when it is IPv4.
    public init(_ socketAddress: SocketAddress) {
        self.init(socketAddress.ipv6 ?? IPv6Address(mapping: socketAddress.address))
    }

    public init(_ address: IPv6Address) {
        self.init()
        withUnsafeMutableBytes(of: &self) { address.write(to: $0, at: 0) }
    }

    public init(_ address: IPv4Address) { self.init(IPv6Address(mapping: address)) }

    /// As an IPv6 address (v4-mapped for IPv4).
    public var ipv6Address: IPv6Address { withUnsafeBytes(of: self) { IPv6Address(reading: $0, at: 0) } }

    /// With `port`, as a socket address of its family.
    public func socketAddress(port: UInt16) -> SocketAddress { SocketAddress(ipv6Address, port) }
}
