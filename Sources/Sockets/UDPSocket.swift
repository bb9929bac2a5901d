import Glibc
import Stack
import Wire

/// A datagram received by a socket.
public struct Datagram: Sendable, Equatable {
    public var payload: [UInt8]
    /// Who sent it.
    public var source: SocketAddress
}

/// A UDP socket on a `NetworkHost`, with `sendto`/`recvfrom` semantics.
///
/// Any thread may call any method. A nonblocking `receive()` throws
/// `.wouldBlock` when nothing is queued (reference flow step 7); the blocking
/// `receive(timeout:)` then waits on the socket's readiness event, which the
/// stack's callback signals when a datagram is queued (steps 11–16), and
/// calls again (steps 17–27).
public final class UDPSocket: Sendable {
    public let host: NetworkHost
    /// Touched only inside `host.withStack`, which serialises access.
    nonisolated(unsafe) private let endpoint: UDPEndpoint
    nonisolated(unsafe) private let waiters = WaiterQueue()
    /// Signalled when the socket becomes readable, gets an error or closes.
    public let readableEvent = Event()

    /// Opens an unbound socket.
    public init(host: NetworkHost) {
        self.host = host
        let waiters = self.waiters
        let event = readableEvent
        endpoint = host.withStack { stack in
            let endpoint = stack.openUDP()
            endpoint.onEvent = { events in waiters.notify(events) }
            return endpoint
        }
        host.withStack { _ in
            _ = waiters.register([.readable, .error, .closed]) { _ in event.signal() }
        }
    }

    deinit {
        let endpoint = self.endpoint
        host.withStack { $0.close(endpoint) }
    }

    /// Binds to `port` on `address` (ours or `.any`); port 0 picks an ephemeral port.
    /// - Throws: `.addressInUse`, `.addressNotAvailable`, `.invalidArgument`, `.closed`.
    public func bind(address: IPv4Address = .any, port: UInt16) throws(SocketError) {
        try host.withStack { stack throws(SocketError) in try stack.bind(endpoint, address: address, port: port) }
    }

    /// The bound local address, or nil when unbound.
    public var localAddress: SocketAddress? {
        host.withStack { _ in endpoint.localPort == 0 ? nil : SocketAddress(endpoint.localAddress, endpoint.localPort) }
    }

    /// Lets the socket send to broadcast addresses (SO_BROADCAST).
    public var allowsBroadcast: Bool {
        get { host.withStack { _ in endpoint.allowsBroadcast } }
        set { host.withStack { _ in endpoint.allowsBroadcast = newValue } }
    }

    /// Sends `payload` to `destination`; returns the bytes sent. Returns as
    /// soon as the frame is queued for the link (reference sendto steps 8–14).
    /// - Throws: `.wouldBlock` when the link is full; `.messageTooLong`,
    ///   `.networkUnreachable`, `.permissionDenied`, `.hostUnreachable`
    ///   (an earlier send's neighbour never answered), `.closed`.
    @discardableResult
    public func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress) throws(SocketError) -> Int {
        let now = monotonicNow()
        try host.withStack { stack throws(SocketError) in
            try stack.send(payload, from: endpoint, to: destination.address, port: destination.port, now: now)
        }
        return payload.count
    }

    /// Sends the bytes of `payload` to `destination`.
    @discardableResult
    public func send(_ payload: [UInt8], to destination: SocketAddress) throws(SocketError) -> Int {
        let result: Result<Int, SocketError> = payload.withUnsafeBytes { bytes in
            do throws(SocketError) { return .success(try send(bytes, to: destination)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Takes the oldest queued datagram without waiting.
    /// - Throws: `.wouldBlock` when none is queued; a pending asynchronous
    ///   error; `.closed`.
    public func receive() throws(SocketError) -> Datagram {
        let received = try host.withStack { stack throws(SocketError) in try stack.receive(from: endpoint) }
        return Datagram(payload: received.payload, source: SocketAddress(received.source, received.sourcePort))
    }

    /// Waits for a datagram, sleeping on the readiness event (no CPU used).
    /// - Parameter timeout: nil waits forever.
    /// - Throws: `.wouldBlock` when the timeout passes; otherwise as `receive()`.
    public func receive(timeout: Duration?) throws(SocketError) -> Datagram {
        let deadline = timeout.map { monotonicNow() + StackDuration(nanoseconds: UInt64($0.components.seconds) * 1_000_000_000 + UInt64($0.components.attoseconds / 1_000_000_000)) }
        while true {
            // Reset before looking, so a datagram queued after the look signals again.
            readableEvent.reset()
            do throws(SocketError) {
                return try receive()
            } catch .wouldBlock {
                var waitMilliseconds: Int32 = -1
                if let deadline {
                    let now = monotonicNow()
                    guard now < deadline else { throw .wouldBlock }
                    waitMilliseconds = Int32(min(Int64(Int32.max), Int64((deadline.since(now).nanoseconds + 999_999) / 1_000_000)))
                }
                readableEvent.wait(timeoutMilliseconds: waitMilliseconds)
            }
        }
    }

    /// The socket's readiness right now.
    public var readiness: ReadinessEvents { host.withStack { _ in endpoint.readiness } }

    /// Registers `callback` for readiness events in `mask`; it runs inside the
    /// stack and must not block. Returns a token for `removeReadinessCallback`.
    public func addReadinessCallback(_ mask: ReadinessEvents,
                                     _ callback: @escaping @Sendable (ReadinessEvents) -> Void) -> Int {
        host.withStack { _ in waiters.register(mask, callback).id }
    }

    public func removeReadinessCallback(_ token: Int) {
        host.withStack { _ in waiters.unregister(WaiterQueue.Token(id: token)) }
    }

    /// Closes the socket: frees the port, wakes blocked receivers with `.closed`.
    public func close() {
        host.withStack { $0.close(endpoint) }
    }
}
