import Wire

/// A datagram received by a socket.
public struct Datagram: Sendable, Equatable {
    /// The datagram's payload.
    public var payload: [UInt8]
    /// Who sent it.
    public var source: SocketAddress

    /// A datagram with its payload and sender.
    public init(payload: [UInt8], source: SocketAddress) {
        self.payload = payload
        self.source = source
    }
}
