import Glibc
import NIOCore
import SocketAPI
import Sockets
import Synchronization
import TapstackClient
import Wire

/// What a `TapstackDatagramChannel` needs of a tapstack socket: the calls
/// that never wait, and a way to hear when waiting would end. Both socket
/// types provide the calls; they differ in how readiness reaches the channel.
protocol DatagramBackend: AnyObject, Sendable {
    func bind(to address: SocketAPI.SocketAddress) throws(SocketError)
    func connect(to peer: SocketAPI.SocketAddress) throws(SocketError)
    func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAPI.SocketAddress?) throws(SocketError) -> Int
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> (length: Int, source: SocketAPI.SocketAddress)
    var localAddress: SocketAPI.SocketAddress? { get }
    var remoteAddress: SocketAPI.SocketAddress? { get }
    var allowsBroadcast: Bool { get set }
    var reuseAddress: Bool { get set }
    var receiveBufferSize: Int { get set }
    var timeToLive: UInt8 { get set }
    var multicastTimeToLive: UInt8 { get set }
    var multicastLoop: Bool { get set }
    func join(group: IPv4Address) throws(SocketError)
    func leave(group: IPv4Address) throws(SocketError)
    func takeError() -> SocketError?
    func close()
    /// Sets who is told (any thread) when the socket may have become ready.
    func setReadinessHandler(_ handler: @escaping @Sendable (ReadinessEvents) -> Void)
    /// Asks to be told once `events` may be true. In-process the stack
    /// reports every change on its own; through the service a one-shot watch
    /// on the data channel is armed.
    func armNotification(_ events: ReadinessEvents)
    /// Whether bind and connect are requests to another process (made off the event loop).
    var controlIsRemote: Bool { get }
    /// Sends datagrams `0..<count` (`datagram(i)`) without waiting, as many
    /// as the link takes; `failed(i, error)` for each refused for good.
    /// - Returns: how many were taken, and whether the link filled up.
    func send(count: Int, _ datagram: (Int) -> (UnsafeRawBufferPointer, SocketAPI.SocketAddress?),
              failed: (Int, SocketError) -> Void) -> (taken: Int, blocked: Bool)
    /// Copies up to `maximum` datagrams out without waiting: the i-th into
    /// `buffer(i)`, then `received(i, length, source)`. Returns how many.
    func receive(upTo maximum: Int, into buffer: (Int) -> UnsafeMutableRawBufferPointer,
                 received: (Int, Int, SocketAPI.SocketAddress) -> Void) throws(SocketError) -> Int
}

/// The batch calls both socket types have.
protocol BatchingSocket: AnyObject {
    func send(batch next: () -> (UnsafeRawBufferPointer, SocketAPI.SocketAddress?)?,
              failed: (SocketError) -> Void) -> (taken: Int, blocked: Bool)
    func receive(upTo maximum: Int, into buffer: (Int) -> UnsafeMutableRawBufferPointer,
                 received: (Int, Int, SocketAPI.SocketAddress) -> Void) throws(SocketError) -> Int
}

extension Sockets.UDPSocket: BatchingSocket {}
extension TapstackClient.UDPSocket: BatchingSocket {}

/// A backend over either socket type: a channel's batches are the socket's
/// (in-process one hold of the stack, as the native echo; through the
/// service one publication in the socket's shared ring).
protocol BatchingBackend: DatagramBackend {
    associatedtype Socket: BatchingSocket
    var socket: Socket { get }
}

extension BatchingBackend {
    func send(count: Int, _ datagram: (Int) -> (UnsafeRawBufferPointer, SocketAPI.SocketAddress?),
              failed: (Int, SocketError) -> Void) -> (taken: Int, blocked: Bool) {
        var next = 0, current = 0
        return socket.send(batch: {
            guard next < count else { return nil }
            current = next
            next += 1
            return datagram(current)
        }, failed: { failed(current, $0) })
    }

    func receive(upTo maximum: Int, into buffer: (Int) -> UnsafeMutableRawBufferPointer,
                 received: (Int, Int, SocketAPI.SocketAddress) -> Void) throws(SocketError) -> Int {
        try socket.receive(upTo: maximum, into: buffer, received: received)
    }
}

/// A socket of an in-process stack: the stack's readiness callback tells the
/// channel of every change, so nothing needs arming.
final class InProcessBackend: BatchingBackend, @unchecked Sendable {
    let socket: Sockets.UDPSocket
    private var token: Int?

    init(host: NetworkHost, family: AddressFamily) { socket = Sockets.UDPSocket(host: host, family: family) }

    func bind(to address: SocketAPI.SocketAddress) throws(SocketError) { try socket.bind(to: address) }
    func connect(to peer: SocketAPI.SocketAddress) throws(SocketError) { try socket.connect(to: peer) }
    func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAPI.SocketAddress?) throws(SocketError) -> Int {
        try socket.send(payload, to: destination)
    }
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> (length: Int, source: SocketAPI.SocketAddress) {
        try socket.receive(into: buffer)
    }
    var localAddress: SocketAPI.SocketAddress? { socket.localAddress }
    var remoteAddress: SocketAPI.SocketAddress? { socket.remoteAddress }
    var allowsBroadcast: Bool { get { socket.allowsBroadcast } set { socket.allowsBroadcast = newValue } }
    var reuseAddress: Bool { get { socket.reuseAddress } set { socket.reuseAddress = newValue } }
    var timeToLive: UInt8 { get { socket.timeToLive } set { socket.timeToLive = newValue } }
    var multicastTimeToLive: UInt8 { get { socket.multicastTimeToLive } set { socket.multicastTimeToLive = newValue } }
    var multicastLoop: Bool { get { socket.multicastLoop } set { socket.multicastLoop = newValue } }
    func join(group: IPv4Address) throws(SocketError) { try socket.join(group: group) }
    func leave(group: IPv4Address) throws(SocketError) { try socket.leave(group: group) }
    var receiveBufferSize: Int { get { socket.receiveBufferSize } set { socket.receiveBufferSize = newValue } }
    func takeError() -> SocketError? { socket.takeError() }
    func close() {
        if let token { socket.removeReadinessCallback(token) }
        token = nil
        socket.close()
    }
    func setReadinessHandler(_ handler: @escaping @Sendable (ReadinessEvents) -> Void) {
        token = socket.addReadinessCallback([.readable, .writable, .error, .closed], handler)
    }
    func armNotification(_ events: ReadinessEvents) {}
    var controlIsRemote: Bool { false }
}

/// A socket of a stack in another process, through its socket service.
final class ServiceBackend: BatchingBackend, @unchecked Sendable {
    let socket: TapstackClient.UDPSocket
    /// Cleared on close: a watch that fires later (the service hung up) must
    /// not reach a channel, or an event loop, that is gone. Boxed: a bare
    /// closure in the lock's generic storage, read through its `inout`
    /// access, was reabstracted on the way out and back in, and the thunks
    /// piled up with every read: after a load of 250 000 datagrams the
    /// reactor thread spent 78 % of its time in them, and a ping-pong took
    /// 4x as long.
    private let handler = Locked<ReadinessHandler?>(nil)

    private final class ReadinessHandler: Sendable {
        let call: @Sendable (ReadinessEvents) -> Void
        init(_ call: @escaping @Sendable (ReadinessEvents) -> Void) { self.call = call }
    }

    init(servicePath: String, family: AddressFamily) throws(SocketError) {
        socket = try TapstackClient.UDPSocket(servicePath: servicePath, family: family)
    }

    func bind(to address: SocketAPI.SocketAddress) throws(SocketError) { try socket.bind(to: address) }
    func connect(to peer: SocketAPI.SocketAddress) throws(SocketError) { try socket.connect(to: peer) }
    func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAPI.SocketAddress?) throws(SocketError) -> Int {
        try socket.send(payload, to: destination)
    }
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> (length: Int, source: SocketAPI.SocketAddress) {
        try socket.receive(into: buffer)
    }
    var localAddress: SocketAPI.SocketAddress? { socket.localAddress }
    var remoteAddress: SocketAPI.SocketAddress? { socket.remoteAddress }
    var allowsBroadcast: Bool { get { socket.allowsBroadcast } set { socket.allowsBroadcast = newValue } }
    var reuseAddress: Bool { get { socket.reuseAddress } set { socket.reuseAddress = newValue } }
    var timeToLive: UInt8 { get { socket.timeToLive } set { socket.timeToLive = newValue } }
    var multicastTimeToLive: UInt8 { get { socket.multicastTimeToLive } set { socket.multicastTimeToLive = newValue } }
    var multicastLoop: Bool { get { socket.multicastLoop } set { socket.multicastLoop = newValue } }
    func join(group: IPv4Address) throws(SocketError) { try socket.join(group: group) }
    func leave(group: IPv4Address) throws(SocketError) { try socket.leave(group: group) }
    var receiveBufferSize: Int { get { socket.receiveBufferSize } set { socket.receiveBufferSize = newValue } }
    func takeError() -> SocketError? { socket.takeError() }
    func close() {
        handler.withLock { $0 = nil }
        socket.close()
    }
    func setReadinessHandler(_ handler: @escaping @Sendable (ReadinessEvents) -> Void) {
        let boxed = ReadinessHandler(handler)
        self.handler.withLock { $0 = boxed }
    }
    /// One watch per direction at a time (bit 1 readable, 2 writable): a read
    /// that finds nothing twice before the data arrives must not pile up watches.
    private let armed = Atomic<UInt8>(0)

    func armNotification(_ events: ReadinessEvents) {
        let bit: UInt8 = events.contains(.writable) ? 2 : 1
        guard armed.bitwiseOr(bit, ordering: .acquiringAndReleasing).oldValue & bit == 0 else { return }
        socket.whenReady(events) { [self] in
            armed.bitwiseAnd(~bit, ordering: .acquiringAndReleasing)
            handler.withLock { $0 }?.call(events)
        }
    }
    var controlIsRemote: Bool { true }
}

extension NIOCore.SocketAddress {
    /// The NIO form of a tapstack address.
    init(_ address: SocketAPI.SocketAddress) {
        if let ipv6 = address.ipv6 {
            var storage = sockaddr_in6()
            storage.sin6_family = sa_family_t(AF_INET6)
            storage.sin6_port = address.port.bigEndian
            withUnsafeMutableBytes(of: &storage.sin6_addr) { ipv6.write(to: $0, at: 0) }
            self.init(storage, host: ipv6.description)
            return
        }
        var storage = sockaddr_in()
        storage.sin_family = sa_family_t(AF_INET)
        storage.sin_port = address.port.bigEndian
        storage.sin_addr.s_addr = address.address.rawValue.bigEndian
        self.init(storage, host: address.address.description)
    }
}

extension SocketAPI.SocketAddress {
    /// The tapstack form of a NIO IP address (a v4-mapped IPv6 one becomes
    /// IPv4); nil for a Unix one.
    init?(_ address: NIOCore.SocketAddress) {
        switch address {
        case .v4(let v4):
            self.init(IPv4Address(rawValue: UInt32(bigEndian: v4.address.sin_addr.s_addr)), UInt16(bigEndian: v4.address.sin_port))
        case .v6(let v6):
            let ipv6 = withUnsafeBytes(of: v6.address.sin6_addr) { IPv6Address(reading: $0, at: 0) }
            self.init(ipv6, UInt16(bigEndian: v6.address.sin6_port))
        default:
            return nil
        }
    }
}

extension SocketError {
    /// As NIO reports a failed system call on a kernel socket.
    func ioError(_ operation: String) -> IOError { IOError(errnoCode: errno, reason: operation) }
}
