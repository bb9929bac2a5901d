import FoundationEssentials
import Glibc
import Stack

/// One socket of a running stack, as `tapstack ss` shows it.
public struct SocketRecord: Codable, Sendable, Equatable {
    /// Who holds a socket: the stack's own process, or a client of the service.
    public struct Owner: Codable, Sendable, Equatable {
        /// `in-process` (the stack's process, e.g. its echo service) or `client`.
        public var kind: String
        public var pid: Int32
        public var uid: UInt32
        /// The process's name (`/proc/PID/comm`), empty when it cannot be read.
        public var command: String
    }

    /// The stack's number for the socket.
    public var id: Int
    /// `ipv4`, or `ipv6` (which takes IPv4 too unless `v6only` is among the options).
    public var family: String
    /// The bound address (IPv6 without brackets; `::` or `0.0.0.0` for any).
    public var localAddress: String
    public var localPort: UInt16
    /// The connected peer; nil when not connected.
    public var remoteAddress: String?
    public var remotePort: UInt16?
    /// Datagrams and payload bytes waiting in the receive queue.
    public var queuedDatagrams: Int
    public var queuedBytes: Int
    /// The receive queue's bound in bytes (SO_RCVBUF).
    public var receiveBufferBytes: Int
    public var receivedDatagrams: UInt64
    /// Datagrams dropped because the receive queue was full.
    public var droppedDatagrams: UInt64
    public var sentDatagrams: UInt64
    /// Options set: `broadcast`, `reuseaddr`, `dontfrag`, `ttl=N`, `tos=N`,
    /// `freebind`, and `join=GROUP` per multicast membership.
    public var options: [String]
    public var owner: Owner

    init(_ endpoint: UDPEndpoint, owner: Owner) {
        id = endpoint.id
        family = endpoint.family == .ipv6 ? "ipv6" : "ipv4"
        localAddress = endpoint.family == .ipv6 && !(endpoint.localAddress6.isUnspecified && !endpoint.localAddress.isUnspecified)
            ? endpoint.localAddress6.description : endpoint.localAddress.description
        localPort = endpoint.localPort
        remoteAddress = endpoint.remote6.map { $0.address.description } ?? endpoint.remote.map { $0.address.description }
        remotePort = endpoint.remote6?.port ?? endpoint.remote?.port
        queuedDatagrams = endpoint.queuedDatagrams
        queuedBytes = endpoint.queuedBytes
        receiveBufferBytes = endpoint.receiveBufferBytes
        receivedDatagrams = endpoint.receivedDatagrams
        droppedDatagrams = endpoint.droppedDatagrams
        sentDatagrams = endpoint.sentDatagrams
        options = []
        if endpoint.allowsBroadcast { options.append("broadcast") }
        if endpoint.reuseAddress { options.append("reuseaddr") }
        if endpoint.dontFragment { options.append("dontfrag") }
        if endpoint.timeToLive != 64 { options.append("ttl=\(endpoint.timeToLive)") }
        if endpoint.typeOfService != 0 { options.append("tos=\(endpoint.typeOfService)") }
        if endpoint.freeBind { options.append("freebind") }
        if endpoint.family == .ipv6 && endpoint.v6Only { options.append("v6only") }
        for group in endpoint.memberships.keys.sorted(by: { $0.rawValue < $1.rawValue }) { options.append("join=\(group)") }
        self.owner = owner
    }
}

/// The JSON of the service's introspection answers: snake_case keys, sorted,
/// so that `jq` and scripts see a stable shape.
public enum IntrospectionFormat {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

/// The name of process `pid` (`/proc/PID/comm`), empty if it cannot be read.
func processName(_ pid: Int32) -> String {
    guard let file = fopen("/proc/\(pid)/comm", "r") else { return "" }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 64)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return "" }
    let length = buffer.firstIndex(of: 0) ?? buffer.count
    let name = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return name.hasSuffix("\n") ? String(name.dropLast()) : name
}
