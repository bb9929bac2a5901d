import Glibc
import Host
import SocketAPI
import Stack
import Synchronization
import Wire

/// A UDP socket on a `NetworkHost`, with `sendto`/`recvfrom` semantics.
///
/// Any thread may call any method. The calls without a `timeout` never wait:
/// `receive()` throws `.wouldBlock` when nothing is queued (reference flow
/// step 7) and `send` throws `.wouldBlock` when the link is full. The calls
/// with a `timeout` wait on the socket's readiness event, which the stack's
/// callback signals (steps 11–16), then call again (steps 17–27); waiting
/// sleeps in `poll()` and costs no CPU. `receiveNext()` and `datagrams` are
/// the async forms, built on the same callbacks.
public final class UDPSocket: DatagramSocket {
    /// The stack this socket belongs to.
    public let host: NetworkHost
    /// Touched only inside `host.withStack`, which serialises access.
    nonisolated(unsafe) private let endpoint: UDPEndpoint
    nonisolated(unsafe) private let waiters = WaiterQueue()
    /// Signalled whenever the socket becomes readable, writable, gets an
    /// error or closes, and never reset here: for a caller that sleeps on
    /// its descriptor itself (reset it, look at `readiness`, then sleep). The
    /// blocking calls do not use it (see `wait(for:timeoutMilliseconds:)`).
    public let event = Event()

    /// The stack's number for this socket (`UDPEndpoint.id`, as `tapstack ss` lists it).
    public var endpointID: Int { endpoint.id }

    /// Opens an unbound socket: IPv4 (AF_INET) by default; `.ipv6` takes
    /// IPv6 and IPv4 both unless `v6Only` is set before binding (AF_INET6).
    public init(host: NetworkHost, family: AddressFamily = .ipv4) {
        self.host = host
        let waiters = self.waiters
        let event = self.event
        endpoint = host.withStack { stack in
            let endpoint = stack.openUDP(family: family)
            endpoint.onEvent = { events in waiters.notify(events) }
            return endpoint
        }
        host.withStack { _ in
            _ = waiters.register([.readable, .writable, .error, .closed]) { _ in event.signal() }
        }
    }

    deinit {
        let endpoint = self.endpoint
        host.withStack { $0.close(endpoint) }
    }

    // MARK: Addresses

    /// Binds to `port` on `address` (ours, a broadcast address, or `.any`);
    /// port 0 picks an ephemeral port (49152–65535).
    /// - Throws: `.addressInUse`, `.addressNotAvailable`, `.invalidArgument`
    ///   (already bound), `.closed`, `.noPortsAvailable`.
    public func bind(address: IPv4Address = .any, port: UInt16) throws(SocketError) {
        try host.withStack { stack throws(SocketError) in try stack.bind(endpoint, address: address, port: port) }
    }

    /// Binds to a socket address of either family (an IPv6 one on an IPv6 socket only).
    public func bind(to address: SocketAddress) throws(SocketError) {
        try host.withStack { stack throws(SocketError) in try stack.bind(endpoint, to: address) }
    }

    /// The socket's family.
    public var family: AddressFamily { endpoint.family }

    /// Takes IPv6 only (IPV6_V6ONLY); an IPv6 socket's setting, before binding.
    public var v6Only: Bool {
        get { host.withStack { _ in endpoint.v6Only } }
        set { host.withStack { _ in endpoint.v6Only = newValue } }
    }

    /// Sets the peer: `send(_:)` goes to it and only its datagrams are
    /// received; ICMP errors about datagrams to it come back as errors
    /// (e.g. `.connectionRefused`). Binds an ephemeral port if unbound.
    /// - Throws: `.invalidArgument` (port 0), `.networkUnreachable`,
    ///   `.permissionDenied` (broadcast without `allowsBroadcast`), `.closed`.
    public func connect(to peer: SocketAddress) throws(SocketError) {
        guard !peer.address.isUnspecified || !(peer.ipv6?.isUnspecified ?? true) else { throw .invalidArgument }
        let now = monotonicNow()
        try host.withStack { stack throws(SocketError) in try stack.connect(endpoint, to: peer, now: now) }
    }

    /// Forgets the peer (like `connect` to AF_UNSPEC).
    public func disconnect() {
        host.withStack { stack in try? stack.connect(endpoint, to: .any, port: 0) }
    }

    /// The bound local address, or nil when unbound (`getsockname`). A
    /// connected socket bound to `.any` shows the address its datagrams
    /// leave from, the stack's, as Linux shows the source connect chose.
    public var localAddress: SocketAddress? {
        host.withStack { stack in
            guard endpoint.localPort != 0 else { return nil }
            if endpoint.family == .ipv6 && (endpoint.remote == nil || !endpoint.localAddress6.isUnspecified) {
                let address = endpoint.localAddress6.isUnspecified
                    ? endpoint.remote6.flatMap { stack.sourceAddress(for: $0.address) } ?? .unspecified : endpoint.localAddress6
                return SocketAddress(address, endpoint.localPort)
            }
            let address = endpoint.localAddress.isUnspecified && endpoint.remote != nil ? stack.address : endpoint.localAddress
            return SocketAddress(address, endpoint.localPort)
        }
    }

    /// The peer, or nil when not connected (`getpeername`).
    public var remoteAddress: SocketAddress? {
        host.withStack { _ in
            endpoint.remote6.map { SocketAddress($0.address, $0.port) } ?? endpoint.remote.map { SocketAddress($0.address, $0.port) }
        }
    }

    /// Takes the pending asynchronous error, if any (getsockopt SO_ERROR):
    /// e.g. `.hostUnreachable` when ARP for an earlier datagram failed.
    public func takeError() -> SocketError? {
        host.withStack { _ in endpoint.takePendingError() }
    }

    // MARK: Options

    /// An option of the stack's socket, read or set under the stack's lock.
    private func option<Value>(_ key: KeyPath<UDPEndpoint, Value>) -> Value {
        host.withStack { _ in endpoint[keyPath: key] }
    }

    private func setOption<Value>(_ key: ReferenceWritableKeyPath<UDPEndpoint, Value>, _ value: Value) {
        host.withStack { _ in endpoint[keyPath: key] = value }
    }

    /// Lets the socket send to broadcast addresses (SO_BROADCAST).
    public var allowsBroadcast: Bool {
        get { option(\.allowsBroadcast) }
        set { setOption(\.allowsBroadcast, newValue) }
    }

    /// Lets several sockets bind one port when all set it (SO_REUSEADDR); set before `bind`.
    public var reuseAddress: Bool {
        get { option(\.reuseAddress) }
        set { setOption(\.reuseAddress, newValue) }
    }

    /// Payload bytes the stack queues for this socket before dropping
    /// (SO_RCVBUF), clamped to `UDPEndpoint.receiveBufferLimits`.
    public var receiveBufferSize: Int {
        get { option(\.receiveBufferBytes) }
        set { setOption(\.receiveBufferBytes, newValue) }
    }

    /// Sets DF and refuses datagrams over the MTU with `.messageTooLong`
    /// instead of fragmenting them (IP_MTU_DISCOVER = IP_PMTUDISC_DO).
    public var dontFragment: Bool {
        get { option(\.dontFragment) }
        set { setOption(\.dontFragment, newValue) }
    }

    /// TTL of unicast and broadcast datagrams (IP_TTL; 64 by default).
    public var timeToLive: UInt8 {
        get { option(\.timeToLive) }
        set { setOption(\.timeToLive, newValue) }
    }

    /// TOS byte of the datagrams sent (IP_TOS).
    public var typeOfService: UInt8 {
        get { option(\.typeOfService) }
        set { setOption(\.typeOfService, newValue) }
    }

    /// TTL of multicast datagrams (IP_MULTICAST_TTL; 1 by default: the link only).
    public var multicastTimeToLive: UInt8 {
        get { option(\.multicastTimeToLive) }
        set { setOption(\.multicastTimeToLive, newValue) }
    }

    /// Whether our own sockets in a group receive the multicast datagrams
    /// this socket sends to it (IP_MULTICAST_LOOP; on by default).
    public var multicastLoop: Bool {
        get { option(\.multicastLoop) }
        set { setOption(\.multicastLoop, newValue) }
    }

    /// Allows `bind` to an address that is not the stack's (IP_FREEBIND).
    public var freeBind: Bool {
        get { option(\.freeBind) }
        set { setOption(\.freeBind, newValue) }
    }

    /// Queues the details of ICMP errors about this socket's datagrams,
    /// connected or not, for `takeQueuedError` (IP_RECVERR).
    public var receivesErrors: Bool {
        get { option(\.receivesErrors) }
        set { setOption(\.receivesErrors, newValue) }
    }

    /// Takes the oldest queued ICMP error (recvmsg with MSG_ERRQUEUE), or nil.
    /// The pending error (`takeError`) becomes the next queued one's, as on Linux.
    public func takeQueuedError() -> ICMPErrorReport? {
        host.withStack { _ in endpoint.takeQueuedError() }
    }

    // MARK: Multicast

    /// Joins multicast `group` (IP_ADD_MEMBERSHIP), or with `sources` only
    /// for datagrams from them (IP_ADD_SOURCE_MEMBERSHIP). The stack reports
    /// the membership with IGMP and receives the group's frames; datagrams to
    /// the group reach this socket when it is bound to their port.
    /// - Throws: `.invalidArgument` (not a multicast address), `.addressInUse`
    ///   (already joined), `.noBufferSpace` (too many memberships), `.closed`.
    public func join(group: IPv4Address, sources: [IPv4Address]? = nil) throws(SocketError) {
        let now = monotonicNow()
        try host.withStack { stack throws(SocketError) in try stack.join(group, for: endpoint, sources: sources, now: now) }
    }

    /// Joins IPv6 multicast `group` on an IPv6 socket (IPV6_JOIN_GROUP): the
    /// stack reports it with MLDv2 and receives the group's frames.
    /// - Throws: `.invalidArgument` (an IPv4 socket, or not a multicast
    ///   address), `.addressInUse` (already joined), `.noBufferSpace`, `.closed`.
    public func join(group: IPv6Address) throws(SocketError) {
        let now = monotonicNow()
        try host.withStack { stack throws(SocketError) in try stack.join(group, for: endpoint, now: now) }
    }

    /// Leaves IPv6 multicast `group` (IPV6_LEAVE_GROUP).
    /// - Throws: `.addressNotAvailable` when not joined.
    public func leave(group: IPv6Address) throws(SocketError) {
        let now = monotonicNow()
        try host.withStack { stack throws(SocketError) in try stack.leave(group, for: endpoint, now: now) }
    }

    /// Leaves `group` (IP_DROP_MEMBERSHIP), or stops receiving from `sources`
    /// (IP_DROP_SOURCE_MEMBERSHIP). The stack sends IGMP's leave when its
    /// last socket leaves.
    /// - Throws: `.addressNotAvailable` when not joined.
    public func leave(group: IPv4Address, sources: [IPv4Address]? = nil) throws(SocketError) {
        let now = monotonicNow()
        try host.withStack { stack throws(SocketError) in try stack.leave(group, for: endpoint, sources: sources, now: now) }
    }

    /// The groups this socket joined.
    public var memberships: [IPv4Address] {
        host.withStack { _ in endpoint.memberships.keys.sorted { $0.rawValue < $1.rawValue } }
    }

    // MARK: Sending

    /// Sends `payload` to `destination` (nil: the connected peer) without waiting; returns the bytes
    /// sent as soon as the frame is queued for the link (sendto steps 8–14).
    /// - Throws: `.wouldBlock` when the link is full (wait for `.writable`);
    ///   `.messageTooLong`, `.networkUnreachable`, `.permissionDenied`,
    ///   `.invalidArgument`, `.closed`; or an error an earlier datagram
    ///   caused (`.hostUnreachable`, `.connectionRefused`), reported once.
    @discardableResult
    public func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress?) throws(SocketError) -> Int {
        try transmit(payload, to: destination)
    }

    /// Sends datagrams one after another under a single hold of the stack
    /// (one lock round trip and one link wake-up for the batch), without
    /// waiting. `next` gives each payload and destination (nil: the peer),
    /// or nil when there are no more; it and `failed` run inside the stack
    /// and must not call this socket.
    /// - Returns: how many were taken (sent, or failed and reported to
    ///   `failed`), and whether the link filled up: the datagram after
    ///   those was not sent and should be offered again once `.writable`.
    public func send(batch next: () -> (UnsafeRawBufferPointer, SocketAddress?)?,
                     failed: (SocketError) -> Void) -> (taken: Int, blocked: Bool) {
        let now = host.now()
        return host.withStack { stack in
            var taken = 0
            while let (payload, destination) = next() {
                do throws(SocketError) {
                    try stack.send(payload, from: endpoint, toPeerOr: destination, now: now)
                } catch .wouldBlock {
                    return (taken, true)
                } catch {
                    failed(error)
                }
                taken += 1
            }
            return (taken, false)
        }
    }

    /// Sends as `send(batch:failed:)`, with `next` also giving each
    /// datagram's overrides (sendmsg's control messages).
    public func send(batchWithOptions next: () -> (UnsafeRawBufferPointer, SocketAddress?, DatagramSendOptions)?,
                     failed: (SocketError) -> Void) -> (taken: Int, blocked: Bool) {
        let now = host.now()
        return host.withStack { stack in
            var taken = 0
            while let (payload, destination, options) = next() {
                do throws(SocketError) {
                    try stack.send(payload, from: endpoint, toPeerOr: destination, options: options, now: now)
                } catch .wouldBlock {
                    return (taken, true)
                } catch {
                    failed(error)
                }
                taken += 1
            }
            return (taken, false)
        }
    }

    /// Sends `payload` as `send(_:to:)`, with `options` overriding the
    /// socket's source address, TTL or TOS for this datagram (sendmsg with
    /// IP_PKTINFO, IP_TTL or IP_TOS control messages).
    @discardableResult
    public func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress?,
                     options: DatagramSendOptions) throws(SocketError) -> Int {
        try transmit(payload, to: destination, options: options)
    }

    private func transmit(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress?,
                          options: DatagramSendOptions = DatagramSendOptions()) throws(SocketError) -> Int {
        let now = host.now()
        try host.withStack { stack throws(SocketError) in
            try stack.send(payload, from: endpoint, toPeerOr: destination, options: options, now: now)
        }
        return payload.count
    }

    // MARK: Batches

    /// Runs `body` with the socket's nonblocking receive and send under a
    /// single hold of the stack: for event-driven users that move many
    /// datagrams per wake-up (one lock round trip for all of them). `body`
    /// runs inside the stack: it must not block, call this socket's other
    /// methods, or keep the `SocketBatch` after it returns.
    public func withBatch<R>(_ body: (SocketBatch) -> R) -> R {
        let now = host.now()
        return host.withStack { stack in body(SocketBatch(stack: stack, endpoint: endpoint, now: now)) }
    }

    // MARK: Receiving

    /// Takes the oldest queued datagram without waiting (recvfrom with MSG_DONTWAIT).
    /// - Throws: `.wouldBlock` when none is queued; a pending asynchronous
    ///   error (reported once); `.closed`.
    public func receive() throws(SocketError) -> Datagram {
        let received = try host.withStack { stack throws(SocketError) in try stack.receive(from: endpoint) }
        return Datagram(payload: received.payload, source: received.sourceAddress)
    }

    /// Copies the oldest queued datagram into `buffer` without waiting and
    /// without allocating. A datagram longer than `buffer` is cut; `length`
    /// is its full length (like MSG_TRUNC). Throws as `receive()`.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> (length: Int, source: SocketAddress) {
        let info = try host.withStack { stack throws(SocketError) in try stack.receive(from: endpoint, into: buffer) }
        return (info.length, info.sourceAddress)
    }

    /// Copies the oldest queued datagram into `buffer` as `receive(into:)`,
    /// returning everything known about it: source, the address it was sent
    /// to (IP_PKTINFO), TTL and TOS as received, and when it arrived
    /// (`wallClockNanoseconds(at:)` gives SO_TIMESTAMP's time).
    public func receiveMessage(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> DatagramInfo {
        try host.withStack { stack throws(SocketError) in try stack.receive(from: endpoint, into: buffer) }
    }

    /// As `receive(upTo:into:received:)`, giving each datagram's full `DatagramInfo`.
    public func receive(upTo maximum: Int, into buffer: (Int) -> UnsafeMutableRawBufferPointer,
                        receivedInfo: (Int, DatagramInfo) -> Void) throws(SocketError) -> Int {
        try host.withStack { stack throws(SocketError) in
            var count = 0
            while count < maximum && (count == 0 || endpoint.pendingError == nil) {
                do throws(SocketError) {
                    let info = try stack.receive(from: endpoint, into: buffer(count))
                    receivedInfo(count, info)
                    count += 1
                } catch .wouldBlock {
                    break
                } catch {
                    if count == 0 { throw error }
                    break
                }
            }
            return count
        }
    }

    /// Copies up to `maximum` queued datagrams out under a single hold of
    /// the stack, without waiting: the i-th into `buffer(i)`, then
    /// `received(i, length, source)` (a longer datagram is cut; `length` is
    /// its full length). Both closures run inside the stack.
    /// - Returns: how many were copied (0 when none was queued).
    /// - Throws: an asynchronous error, only when it is the first thing
    ///   found (otherwise the next call reports it); `.closed`.
    public func receive(upTo maximum: Int, into buffer: (Int) -> UnsafeMutableRawBufferPointer,
                        received: (Int, Int, SocketAddress) -> Void) throws(SocketError) -> Int {
        try receive(upTo: maximum, into: buffer, receivedInfo: { index, info in
            received(index, info.length, info.sourceAddress)
        })
    }

    // MARK: Readiness

    /// The events true right now: readable, writable, error, closed.
    public var readiness: ReadinessEvents { host.withStack { $0.readiness(of: endpoint) } }

    /// Registers `callback` for readiness events in `mask` (the reference
    /// flow's step 15). It runs inside the stack, on whichever thread changed
    /// the state, and must not block or call this socket. Returns a token for
    /// `removeReadinessCallback`.
    public func addReadinessCallback(_ mask: ReadinessEvents,
                                     _ callback: @escaping @Sendable (ReadinessEvents) -> Void) -> Int {
        host.withStack { _ in waiters.register(mask, callback).id }
    }

    /// Removes a callback added with `addReadinessCallback`. Any thread.
    public func removeReadinessCallback(_ token: Int) {
        host.withStack { _ in waiters.unregister(WaiterQueue.Token(id: token)) }
    }

    /// Callbacks registered by threads or tasks waiting on this socket now (for tests).
    var oneShotWaiters: Int { host.withStack { _ in waiters.oneShotCount } }

    /// Registers a one-shot callback unless an event in `mask` is already
    /// true; returns the events already true (callback not registered) or
    /// nil (registered). Used by the async and poll waits.
    func armOnce(_ mask: ReadinessEvents, _ callback: @escaping @Sendable (ReadinessEvents) -> Void) -> (ReadinessEvents?, Int?) {
        host.withStack { stack in
            let now = stack.readiness(of: endpoint).intersection(mask)
            if !now.isEmpty { return (now, nil) }
            if mask.contains(.writable) { endpoint.wantsWritableNotification() }
            return (nil, waiters.register(mask, once: true, callback).id)
        }
    }

    /// Sleeps until one of `events` is true or the timeout passes (see
    /// `DatagramSocket`). Each sleeping thread arms a one-shot waiter of its
    /// own, checked against the socket's readiness under the stack's lock, so
    /// threads sharing a socket cannot take each other's wake-ups (with one
    /// shared event, a thread resetting it before its own try could clear the
    /// signal another thread was about to sleep on).
    ///
    /// On the executor's own thread (deferred work of an event-driven user)
    /// nothing else would run the core or the link while it slept, so the
    /// wait runs executor turns instead until the events come.
    public func wait(for events: ReadinessEvents, timeoutMilliseconds: Int32) {
        if host.isExecutorThread {
            let end = timeoutMilliseconds < 0 ? UInt64.max : monotonicNanoseconds() &+ UInt64(timeoutMilliseconds) * 1_000_000
            if events.contains(.writable) { host.withStack { _ in endpoint.wantsWritableNotification() } }
            _ = host.runTurns(until: { !readiness.isDisjoint(with: events) }, deadline: end)
            return
        }
        idleWaitEventsLock.lock()
        let wakeup = idleWaitEvents.popLast() ?? Event()
        idleWaitEventsLock.unlock()
        let (already, token) = armOnce(events) { _ in wakeup.signal() }
        if already == nil { wakeup.wait(timeoutMilliseconds: timeoutMilliseconds) }
        // After this the callback has run or never will (both under the stack's lock).
        if let token { removeReadinessCallback(token) }
        wakeup.reset()
        idleWaitEventsLock.lock()
        if idleWaitEvents.count < Self.idleWaitEventLimit { idleWaitEvents.append(wakeup) }
        idleWaitEventsLock.unlock()
    }

    /// Events kept for threads that will sleep in `wait`: one eventfd per
    /// concurrent sleeper, made once, not one per wait. (A pthread lock, not
    /// `Mutex`: ThreadSanitizer does not see `Mutex`'s ordering and reports
    /// its contended use as a race.)
    private let idleWaitEventsLock = Lock()
    /// Guarded by `idleWaitEventsLock`.
    nonisolated(unsafe) private var idleWaitEvents: [Event] = []
    private static let idleWaitEventLimit = 8

    /// Suspends until an event in `mask` is true (see `DatagramSocket`).
    public func waitAsync(for mask: ReadinessEvents) async throws(SocketError) {
        let resumed = Mutex<CheckedContinuation<Void, Never>?>(nil)
        let cancelled = Atomic<Bool>(false)
        let token = Mutex<Int?>(nil)
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                resumed.withLock { $0 = continuation }
                let (already, registered) = armOnce(mask) { _ in
                    resumed.withLock { $0.take() }?.resume()
                }
                token.withLock { $0 = registered }
                if already != nil || Task.isCancelled {
                    resumed.withLock { $0.take() }?.resume()
                }
            }
        } onCancel: {
            cancelled.store(true, ordering: .relaxed)
            resumed.withLock { $0.take() }?.resume()
        }
        if let registered = token.withLock({ $0 }) { removeReadinessCallback(registered) }
        if cancelled.load(ordering: .relaxed) { throw .cancelled }
    }

    // MARK: Closing

    /// Closes the socket: frees the port, drops queued datagrams, and wakes
    /// every waiter, whose call then throws `.closed`.
    public func close() {
        host.withStack { $0.close(endpoint) }
    }
}

/// The nonblocking calls of one socket inside `UDPSocket.withBatch`; each
/// behaves as the `UDPSocket` call of the same name.
public struct SocketBatch {
    fileprivate let stack: NetworkStack
    fileprivate let endpoint: UDPEndpoint
    fileprivate let now: StackInstant

    /// As `UDPSocket.receive(into:)`.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> (length: Int, source: SocketAddress) {
        let info = try stack.receive(from: endpoint, into: buffer)
        return (info.length, info.sourceAddress)
    }

    /// Lends the oldest queued datagram to `body` in place, with its
    /// sender, without copying it: it is removed when `body` returns true
    /// and stays queued (for a later call) when false. Returns what `body`
    /// returned. `body` may send through this batch but must not keep the bytes.
    /// - Throws: as `receive(into:)`.
    @discardableResult
    public func receive(_ body: (UnsafeRawBufferPointer, SocketAddress) -> Bool) throws(SocketError) -> Bool {
        try stack.receive(from: endpoint) { bytes, info in body(bytes, info.sourceAddress) }
    }

    /// As `UDPSocket.send(_:to:)`.
    public func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress?) throws(SocketError) {
        try stack.send(payload, from: endpoint, toPeerOr: destination, now: now)
    }
}

extension NetworkStack {
    /// Sends to `destination` (either family), or to the peer when nil.
    func send(_ payload: UnsafeRawBufferPointer, from endpoint: UDPEndpoint, toPeerOr destination: SocketAddress?,
              options: DatagramSendOptions = DatagramSendOptions(), now: StackInstant) throws(SocketError) {
        if let destination {
            try send(payload, from: endpoint, to: destination, options: options, now: now)
        } else {
            try send(payload, from: endpoint, to: nil, options: options, now: now)
        }
    }
}
