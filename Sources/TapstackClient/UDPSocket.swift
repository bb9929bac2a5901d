import CTapstackChannel
import TapstackProtocol
import Glibc
import SocketAPI
import Synchronization
import Wire

/// A UDP socket of a tapstack running in another process, opened through its
/// socket service (`tapstack run --socket PATH`).
///
/// The same API as the in-process `Sockets.UDPSocket` (both are
/// `DatagramSocket`s, which give the waiting forms): the calls without a
/// timeout never wait (`receive()` throws `.wouldBlock` when nothing is
/// queued), the calls with a timeout sleep in `poll()` on the data channel,
/// and the async ones suspend without blocking a thread. Datagrams cross a
/// kernel SOCK_SEQPACKET channel, one message each, so there is no request
/// and reply per datagram; `fileDescriptor` can go into the caller's own
/// poll/epoll set. Errors POSIX reports on the call (no route, message too
/// long, broadcast not allowed) are reported on the call; errors an earlier
/// datagram caused (port unreachable) come with a later receive.
///
/// Any thread may call any method.
public final class UDPSocket: DatagramSocket {
    /// Guards the control connection (one request, one reply at a time) and
    /// the flags the client keeps (connected, broadcast).
    private let state: Locked<tsc_socket>
    /// The data channel, closed only once no call is using it.
    private let channel: DataChannel
    /// An error a batch receive took after its datagrams (another thread
    /// raced it to the channel), for the next receive to report: its errno, 0 when none.
    private let stashedError = Atomic<Int32>(0)
    /// The data channel; readable when a datagram (or an error) waits.
    /// Valid until `close()`.
    public var fileDescriptor: Int32 { channel.descriptor }

    /// The socket's shared region, nil until a data call asked for it (for
    /// tests that play a service writing what no service writes).
    var region: UnsafeMutableRawPointer? { state.withLock { $0.ring } }

    /// The service path: $TAPSTACK_SOCKET, else /run/tapstack/tap0.sock.
    public static var defaultServicePath: String { String(cString: tsc_socket_path()) }

    /// Opens an unbound socket on the stack serving `servicePath`: IPv4, or
    /// with `.ipv6` an AF_INET6 socket that takes IPv4 too (v4-mapped).
    /// - Throws: `.serviceUnavailable` when no service answers at
    ///   `servicePath`; `.noPortsAvailable` when it serves as many sockets
    ///   as it allows (or this process has no descriptor left);
    ///   `.permissionDenied` when the path may not be opened.
    public init(servicePath: String = UDPSocket.defaultServicePath, family: AddressFamily = .ipv4) throws(SocketError) {
        var socket = tsc_socket()
        let domain = family == .ipv6 ? AF_INET6 : AF_INET
        guard tsc_open(&socket, servicePath, domain, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue)) == 0 else {
            switch errno {
            case EMFILE, ENFILE: throw .noPortsAvailable
            case EACCES, EPERM: throw .permissionDenied
            case ENOENT, ECONNREFUSED, ENOTSOCK, ENOTDIR, ETIMEDOUT, ENETDOWN, EPROTOTYPE, ENAMETOOLONG: throw .serviceUnavailable
            default: throw SocketError(errno: errno) ?? .serviceUnavailable
            }
        }
        channel = DataChannel(socket.data_fd)
        socket.data_fd = -1  // owned by the channel from here on
        state = Locked(socket)
    }

    deinit {
        close()
        state.withLock { tsc_unmap_ring(&$0) }  // no call can be using it now
    }

    /// The socket as data calls use it: moved to shared memory (for sends,
    /// and received datagrams when `receiving`) on first use.
    private func dataState(receiving: Bool) -> tsc_socket {
        state.withLock { socket in
            if tsc_ring_settled(&socket, receiving ? 1 : 0) == 0 { _ = tsc_use_ring(&socket, receiving ? 1 : 0) }
            return socket
        }
    }

    /// Runs a control call; maps its errno to a `SocketError`.
    private func control(_ body: (inout tsc_socket) -> Int32) throws(SocketError) {
        let failure: Int32? = state.withLock { socket in body(&socket) == 0 ? nil : errno }
        if let failure { throw Self.error(failure) }
    }

    /// The `SocketError` for a client call's errno. ENETDOWN is what the
    /// client library reports when the service closed the channel or
    /// connection: the stack is gone, not a network error of the socket.
    static func error(_ code: Int32) -> SocketError {
        code == ENETDOWN ? .serviceUnavailable : SocketError(errno: code) ?? .invalidArgument
    }

    // MARK: Addresses

    /// Binds to `port` on `address` (the stack's, a broadcast address, or
    /// `.any`); port 0 picks an ephemeral port.
    public func bind(address: IPv4Address = .any, port: UInt16) throws(SocketError) {
        var protocolAddress = tsp_address(address)
        try control { tsc_bind(&$0, &protocolAddress, port) }
    }

    /// Binds to a socket address of either family (IPv6 on an IPv6 socket).
    public func bind(to address: SocketAddress) throws(SocketError) {
        var protocolAddress = tsp_address(address)
        try control { tsc_bind(&$0, &protocolAddress, address.port) }
    }

    /// Sets the peer: `send(_:)` goes to it and only its datagrams are received.
    public func connect(to peer: SocketAddress) throws(SocketError) {
        var protocolAddress = tsp_address(peer)
        guard tsp_address_is_unspecified(&protocolAddress) == 0 else { throw .invalidArgument }
        try control { tsc_connect(&$0, &protocolAddress, peer.port) }
    }

    /// Forgets the peer.
    public func disconnect() {
        var any = tsp_address()
        try? control { tsc_connect(&$0, &any, 0) }
    }

    private func names() -> (local: SocketAddress?, remote: SocketAddress?) {
        var localAddress = tsp_address(), localPort: UInt16 = 0, connected: Int32 = 0
        var remoteAddress = tsp_address(), remotePort: UInt16 = 0
        do {
            try control { tsc_names(&$0, &localAddress, &localPort, &connected, &remoteAddress, &remotePort) }
        } catch {
            return (nil, nil)
        }
        return (localPort == 0 ? nil : localAddress.socketAddress(port: localPort),
                connected == 0 ? nil : remoteAddress.socketAddress(port: remotePort))
    }

    /// The bound local address, or nil when unbound (`getsockname`).
    public var localAddress: SocketAddress? { names().local }

    /// The peer, or nil when not connected (`getpeername`).
    public var remoteAddress: SocketAddress? { names().remote }

    /// Waits until the service has taken every datagram this socket sent
    /// (the data channel's send queue is empty), or `timeout` passes; returns
    /// whether it did. Call before closing when the last datagrams must not be
    /// lost with the socket, as a program that sends and exits expects.
    public func waitUntilSent(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        var socket = state.withLock { $0 }
        while true {
            guard let unsent = try? channel.use({ fd throws(SocketError) in
                socket.data_fd = fd
                return tsc_unsent_bytes(&socket)
            }) else { return false }
            if unsent == 0 { return true }
            if ContinuousClock.now >= deadline { return false }
            usleep(1_000)
        }
    }

    /// Takes the pending asynchronous error, if any (SO_ERROR).
    public func takeError() -> SocketError? {
        var value: Int32 = 0
        guard (try? control { tsc_getopt(&$0, Int32(TSP_OPT_ERROR.rawValue), &value) }) != nil, value != 0 else { return nil }
        return SocketError(errno: value)
    }

    // MARK: Options

    private func option(_ name: tsp_option) -> Int32 {
        var value: Int32 = 0
        try? control { tsc_getopt(&$0, Int32(name.rawValue), &value) }
        return value
    }

    private func setOption(_ name: tsp_option, _ value: Int32) {
        try? control { tsc_setopt(&$0, Int32(name.rawValue), value) }
    }

    /// Microseconds a waiting receive (`receive(timeout:)`, `wait(for:
    /// .readable ...)`) polls the socket's shared ring before it sleeps in
    /// poll(), as SO_BUSY_POLL does on Linux; 0: sleep at once. A
    /// conversation whose answers come within that time saves a wake-up
    /// per datagram, at the price of the CPU it polls with. At most a
    /// second is used. The poll makes no system call, so a signal that
    /// comes meanwhile runs its handler and the wait goes on (as one just
    /// before poll() would). Setting it ends `busyPollsAdaptively`; 0 while
    /// that is on. $TAPSTACK_BUSY_POLL gives the value sockets start with.
    public var busyPollMicroseconds: Int {
        get { Int(max(0, state.withLock { $0.busy_poll_us })) }
        set { state.withLock { $0.busy_poll_us = Int32(clamping: max(0, newValue)) } }
    }

    /// Whether a waiting receive polls the ring adaptively: the default
    /// (unless $TAPSTACK_BUSY_POLL gives microseconds). As the stack's
    /// executor does with `--busy-poll auto`, it polls for a window that
    /// follows the gaps between datagrams, within four wake-ups as measured
    /// on this host, yielding its CPU as it polls; not in a stream (more
    /// than two datagrams taken since the last wait). Datagrams further
    /// apart than that sleep at once, as with 0. It is what spares a
    /// conversation through the socket service the two extra wake-ups of
    /// its hop (docs/ARCHITECTURE.md).
    public var busyPollsAdaptively: Bool {
        get { state.withLock { $0.busy_poll_us } == TSC_BUSY_POLL_AUTO }
        set { state.withLock { $0.busy_poll_us = newValue ? TSC_BUSY_POLL_AUTO : 0 } }
    }

    /// Lets the socket send to broadcast addresses (SO_BROADCAST).
    public var allowsBroadcast: Bool {
        get { option(TSP_OPT_BROADCAST) != 0 }
        set { setOption(TSP_OPT_BROADCAST, newValue ? 1 : 0) }
    }

    /// Lets several sockets bind one port when all set it (SO_REUSEADDR); set before `bind`.
    public var reuseAddress: Bool {
        get { option(TSP_OPT_REUSEADDR) != 0 }
        set { setOption(TSP_OPT_REUSEADDR, newValue ? 1 : 0) }
    }

    /// Sets DF and refuses datagrams over the MTU (IP_PMTUDISC_DO).
    public var dontFragment: Bool {
        get { option(TSP_OPT_DONTFRAG) != 0 }
        set { setOption(TSP_OPT_DONTFRAG, newValue ? 1 : 0) }
    }

    /// Payload bytes the stack queues for this socket (SO_RCVBUF).
    public var receiveBufferSize: Int {
        get { Int(option(TSP_OPT_RCVBUF)) }
        set { setOption(TSP_OPT_RCVBUF, Int32(clamping: newValue)) }
    }

    /// TTL of unicast and broadcast datagrams (IP_TTL; 64 by default).
    public var timeToLive: UInt8 {
        get { UInt8(clamping: option(TSP_OPT_TTL)) }
        set { setOption(TSP_OPT_TTL, Int32(newValue)) }
    }

    /// TTL of multicast datagrams (IP_MULTICAST_TTL; 1 by default).
    public var multicastTimeToLive: UInt8 {
        get { UInt8(clamping: option(TSP_OPT_MULTICAST_TTL)) }
        set { setOption(TSP_OPT_MULTICAST_TTL, Int32(newValue)) }
    }

    /// Whether the stack's own sockets in a group hear this socket's multicast (IP_MULTICAST_LOOP).
    public var multicastLoop: Bool {
        get { option(TSP_OPT_MULTICAST_LOOP) != 0 }
        set { setOption(TSP_OPT_MULTICAST_LOOP, newValue ? 1 : 0) }
    }

    /// Joins multicast `group` (IP_ADD_MEMBERSHIP), or with `source` only for
    /// its datagrams (IP_ADD_SOURCE_MEMBERSHIP); see `Sockets.UDPSocket.join`.
    public func join(group: IPv4Address, source: IPv4Address? = nil) throws(SocketError) {
        let option = source == nil ? TSP_OPT_ADD_MEMBERSHIP : TSP_OPT_ADD_SOURCE_MEMBERSHIP
        try membership(option, tsp_address(group), source.map(tsp_address.init))
    }

    /// Joins IPv6 multicast `group` on an IPv6 socket (IPV6_JOIN_GROUP).
    public func join(group: IPv6Address) throws(SocketError) {
        try membership(TSP_OPT_ADD_MEMBERSHIP, tsp_address(group), nil)
    }

    /// Leaves IPv6 multicast `group` (IPV6_LEAVE_GROUP).
    public func leave(group: IPv6Address) throws(SocketError) {
        try membership(TSP_OPT_DROP_MEMBERSHIP, tsp_address(group), nil)
    }

    private func membership(_ option: tsp_option, _ group: tsp_address, _ source: tsp_address?) throws(SocketError) {
        var group = group, given = source ?? tsp_address()
        if source == nil {
            try control { tsc_membership(&$0, Int32(option.rawValue), &group, nil) }
        } else {
            try control { tsc_membership(&$0, Int32(option.rawValue), &group, &given) }
        }
    }

    /// Leaves `group` (IP_DROP_MEMBERSHIP), or stops hearing `source` in it.
    public func leave(group: IPv4Address, source: IPv4Address? = nil) throws(SocketError) {
        let option = source == nil ? TSP_OPT_DROP_MEMBERSHIP : TSP_OPT_DROP_SOURCE_MEMBERSHIP
        try membership(option, tsp_address(group), source.map(tsp_address.init))
    }

    // MARK: Sending

    /// Sends `payload` to `destination` (nil: the connected peer) without
    /// waiting; returns the bytes sent once the datagram is on its way to the stack.
    /// - Throws: `.wouldBlock` when the channel is full (the stack's link is
    ///   backed up); `.messageTooLong`, `.networkUnreachable`,
    ///   `.permissionDenied` (broadcast), `.invalidArgument`, `.notConnected`.
    @discardableResult
    public func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress?) throws(SocketError) -> Int {
        var socket = dataState(receiving: false)
        var part = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
        var address = destination.map { tsp_address($0) } ?? tsp_address()
        let n = try channel.use { fd in
            socket.data_fd = fd
            return destination == nil ? tsc_sendv(&socket, &part, 1, nil, 0, Int32(MSG_DONTWAIT))
                : tsc_sendv(&socket, &part, 1, &address, destination!.port, Int32(MSG_DONTWAIT))
        }
        guard n >= 0 else { throw Self.error(errno) }
        return n
    }

    /// Sends datagrams one after another without waiting, as one batch:
    /// those that go into the socket's shared ring become visible to the
    /// stack together at the end (one look for the stack, one fence and at
    /// most one doorbell for the sender). `next` gives each payload and
    /// destination (nil: the peer), or nil when there are no more; each
    /// payload is copied before `next` is called again. `next` and `failed`
    /// run while the batch holds the socket's send lock: they must not call
    /// this socket.
    /// - Returns: how many were taken (sent, or failed and reported to
    ///   `failed`), and whether the stack's side filled up: the datagram
    ///   after those was not sent and should be offered again once `.writable`.
    public func send(batch next: () -> (UnsafeRawBufferPointer, SocketAddress?)?,
                     failed: (SocketError) -> Void) -> (taken: Int, blocked: Bool) {
        var socket = dataState(receiving: false)
        let outcome: Result<(taken: Int, blocked: Bool), SocketError> = Result { () throws(SocketError) in
            try channel.use { fd in
                socket.data_fd = fd
                var batch = tsc_send_batch()
                tsc_send_batch_begin(&socket, &batch)
                defer { tsc_send_batch_end(&socket, &batch) }
                var taken = 0
                while let (payload, destination) = next() {
                    var part = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
                    var address = destination.map { tsp_address($0) } ?? tsp_address()
                    let n = destination == nil ? tsc_send_batch_add(&socket, &batch, &part, 1, nil, 0, nil)
                        : tsc_send_batch_add(&socket, &batch, &part, 1, &address, destination!.port, nil)
                    if n < 0 {
                        let code = errno
                        if code == EAGAIN { return (taken, true) }
                        failed(Self.error(code))
                    }
                    taken += 1
                }
                return (taken, false)
            }
        }
        switch outcome {
        case .success(let result): return result
        case .failure(let error):
            // Closed: each datagram fails, as each send would.
            var taken = 0
            while next() != nil {
                failed(error)
                taken += 1
            }
            return (taken, false)
        }
    }

    // MARK: Receiving

    /// Copies the oldest datagram into `buffer` without waiting. A datagram
    /// longer than `buffer` is cut; `length` is its full length.
    /// - Throws: `.wouldBlock` when none waits; an asynchronous error an
    ///   earlier datagram caused (once); `.networkUnreachable` when the service is gone.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> (length: Int, source: SocketAddress) {
        try throwStashedError()
        var socket = dataState(receiving: true)
        var part = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var address = tsp_address(), port: UInt16 = 0, truncated: Int32 = 0
        let n = try channel.use { fd in
            socket.data_fd = fd
            return tsc_recvv(&socket, &part, 1, &address, &port, Int32(MSG_DONTWAIT | MSG_TRUNC), &truncated)
        }
        guard n >= 0 else { throw Self.error(errno) }
        return (n, address.socketAddress(port: port))
    }

    /// Copies up to `maximum` waiting datagrams out without waiting: the
    /// i-th into `buffer(i)`, then `received(i, length, source)` (a longer
    /// datagram is cut; `length` is its full length). It stops at an
    /// error, which the next call reports.
    /// - Returns: how many were copied (0 when none waited).
    /// - Throws: an asynchronous error, only when it is the first thing
    ///   found; `.closed`; `.networkUnreachable` when the service is gone.
    public func receive(upTo maximum: Int, into buffer: (Int) -> UnsafeMutableRawBufferPointer,
                        received: (Int, Int, SocketAddress) -> Void) throws(SocketError) -> Int {
        guard maximum > 0 else { return 0 }
        try throwStashedError()
        var socket = dataState(receiving: true)
        return try channel.use { fd throws(SocketError) in
            socket.data_fd = fd
            var count = 0
            var address = tsp_address(), port: UInt16 = 0, truncated: Int32 = 0
            while count < maximum {
                let target = buffer(count)
                var part = iovec(iov_base: target.baseAddress, iov_len: target.count)
                let n = count == 0
                    ? tsc_recvv(&socket, &part, 1, &address, &port, Int32(MSG_DONTWAIT | MSG_TRUNC), &truncated)
                    : tsc_recv_next(&socket, &part, 1, &address, &port, &truncated)
                guard n >= 0 else {
                    let code = errno
                    if code != EAGAIN {
                        if count == 0 { throw Self.error(code) }
                        stashedError.store(code, ordering: .releasing)
                    }
                    break
                }
                received(count, n, address.socketAddress(port: port))
                count += 1
            }
            return count
        }
    }

    /// Throws the error a batch left for the next receive, if any (once).
    private func throwStashedError() throws(SocketError) {
        guard stashedError.load(ordering: .relaxed) != 0 else { return }
        let code = stashedError.exchange(0, ordering: .acquiring)
        if code != 0 { throw Self.error(code) }
    }

    /// Takes the oldest datagram without waiting; throws as `receive(into:)`.
    public func receive() throws(SocketError) -> Datagram {
        try throwStashedError()
        var socket = dataState(receiving: true)
        let length = try channel.use { fd throws(SocketError) in
            socket.data_fd = fd
            let pending = Int(tsc_pending_bytes(&socket))
            guard pending == 0 else { return pending }
            // 0: nothing queued, or an empty datagram or an error at the head.
            // Only a message already at the head is taken, sized for what it
            // is: one arriving now must not land in a 1-byte buffer, cut.
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 0) > 0 else { throw SocketError.wouldBlock }
            return Int(tsc_pending_bytes(&socket))
        }
        var payload = [UInt8](repeating: 0, count: max(length, 1))
        let result: Result<(length: Int, source: SocketAddress), SocketError> = payload.withUnsafeMutableBytes { bytes in
            do throws(SocketError) { return .success(try receive(into: bytes)) } catch { return .failure(error) }
        }
        let (received, source) = try result.get()
        payload.removeSubrange(min(received, payload.count)...)
        return Datagram(payload: payload, source: source)
    }

    // MARK: Waiting (see `DatagramSocket`)

    /// Sleeps in poll() until the channel is readable (or writable, for
    /// `.writable`), has hung up, or the timeout passes; waiting to read,
    /// first polls the ring for `busyPollMicroseconds`, or adaptively.
    public func wait(for events: ReadinessEvents, timeoutMilliseconds: Int32) {
        if events.contains(.readable) && stashedError.load(ordering: .relaxed) != 0 { return }  // the next receive reports it
        // Only a socket that busy-polls copies its state (the region stays mapped while self lives).
        var polling: tsc_socket? = nil
        if !events.contains(.writable), timeoutMilliseconds != 0,
           var socket = state.withLock({ $0.busy_poll_us != 0 ? $0 : nil }) {
            let limit = timeoutMilliseconds < 0 ? Int64.max : Int64(timeoutMilliseconds) * 1_000_000
            if tsc_ring_wait_poll(&socket, limit, 0) != 0 { return }
            polling = socket
        }
        // A closed socket returns at once; its next call reports `.closed`.
        _ = try? channel.use { fd in
            var descriptor = pollfd(fd: fd, events: Int16(events.contains(.writable) ? POLLOUT : POLLIN), revents: 0)
            return poll(&descriptor, 1, timeoutMilliseconds)
        }
        if var socket = polling { tsc_ring_wait_ended(&socket) }
    }

    /// Suspends until the channel is readable (or writable, for `.writable`),
    /// without blocking a thread.
    public func waitAsync(for events: ReadinessEvents) async throws(SocketError) {
        if events.contains(.readable) && stashedError.load(ordering: .relaxed) != 0 { return }
        let copy = try channel.use { dup($0) }
        guard copy >= 0 else { throw .noPortsAvailable }
        try await Reactor.shared.wait(owning: copy, writable: events.contains(.writable))
    }

    /// Calls `callback` once, on another thread, when the socket may have
    /// become readable (or writable, for `.writable`), has hung up, or is
    /// closed: an event loop's way to wait without a thread of its own.
    public func whenReady(_ events: ReadinessEvents, _ callback: @escaping @Sendable () -> Void) {
        if events.contains(.readable) && stashedError.load(ordering: .relaxed) != 0 { return callback() }
        guard let copy = try? channel.use({ fd throws(SocketError) in dup(fd) }), copy >= 0 else {
            callback()  // closed: the next call reports it
            return
        }
        Reactor.shared.notify(owning: copy, writable: events.contains(.writable), callback)
    }

    // MARK: Closing

    /// Closes the socket; the service frees its port and queued datagrams.
    /// Calls already under way on other threads finish on the channel
    /// first; later ones throw `.closed`.
    public func close() {
        state.withLock { socket in
            if socket.control_fd >= 0 { Glibc.close(socket.control_fd) }
            socket.control_fd = -1
        }
        channel.close()
    }
}
