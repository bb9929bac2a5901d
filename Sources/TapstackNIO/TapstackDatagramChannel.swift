import Glibc
import NIOCore
import SocketAPI
import Synchronization
import Wire

/// A SwiftNIO datagram `Channel` on a tapstack socket: what
/// `DatagramBootstrap` gives on a kernel socket, with `AddressedEnvelope<ByteBuffer>`
/// in and out.
///
/// Everything runs on the channel's event loop; the stack's readiness (or,
/// through the service, the data channel's) hops onto it. Reads come in
/// batches of `maxMessagesPerRead`, each followed by `channelReadComplete`;
/// flushed writes go out until the link is full, when the channel turns
/// unwritable (`channelWritabilityChanged`) and keeps them until the stack
/// says `.writable`: nothing is dropped. Errors are NIO `IOError`s with the
/// errno a kernel socket would give.
public final class TapstackDatagramChannel: Channel, ChannelCore, MulticastChannel, @unchecked Sendable {
    public let eventLoop: EventLoop
    public let allocator = ByteBufferAllocator()
    public var pipeline: ChannelPipeline { _pipeline }
    public var parent: Channel? { nil }
    public var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    public var _channelCore: ChannelCore { self }

    // Event loop only.
    private var _pipeline: ChannelPipeline!
    private let backend: DatagramBackend
    private let closePromise: EventLoopPromise<Void>
    private var isOpen = true
    /// Read from any thread (`isActive`), written on the loop.
    private let activeFlag = Atomic<Bool>(false)
    private var active: Bool {
        get { activeFlag.load(ordering: .acquiring) }
        set { activeFlag.store(newValue, ordering: .releasing) }
    }
    private var autoRead = true
    private var readPending = false
    private var readScheduled = false
    private var maxMessagesPerRead = 4
    private var recvAllocator: RecvByteBufferAllocator = FixedSizeRecvByteBufferAllocator(capacity: 2048)
    private var waterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 32 * 1024, high: 64 * 1024)
    /// Written, not yet sent: (envelope, promise, flushed).
    private var pendingWrites = CircularBuffer<(AddressedEnvelope<ByteBuffer>, EventLoopPromise<Void>?)>()
    private var flushedCount = 0
    private var pendingBytes = 0
    /// False while the link refused a send, or buffered bytes passed the high
    /// mark. Read from any thread (`isWritable`), written on the loop.
    private let writableFlag = Atomic<Bool>(true)
    private var writable: Bool {
        get { writableFlag.load(ordering: .acquiring) }
        set { writableFlag.store(newValue, ordering: .releasing) }
    }
    private var linkFull = false
    /// The addresses after bind or connect; read from any thread.
    private let addresses = Locked<(local: NIOCore.SocketAddress?, remote: NIOCore.SocketAddress?)>((nil, nil))
    private var cachedLocal: NIOCore.SocketAddress? { addresses.withLock { $0.local } }
    private var cachedRemote: NIOCore.SocketAddress? { addresses.withLock { $0.remote } }

    init(backend: DatagramBackend, eventLoop: EventLoop) {
        self.backend = backend
        self.eventLoop = eventLoop
        closePromise = eventLoop.makePromise()
        _pipeline = ChannelPipeline(channel: self)
        let loop = eventLoop
        let unchecked = UncheckedChannel(self)
        backend.setReadinessHandler { events in
            loop.execute { unchecked.channel.readinessChanged(events) }
        }
    }

    // MARK: Channel

    public var localAddress: NIOCore.SocketAddress? { cachedLocal }
    public var remoteAddress: NIOCore.SocketAddress? { cachedRemote }
    public var isActive: Bool { active }
    public var isWritable: Bool { writable }

    public func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        if eventLoop.inEventLoop {
            return eventLoop.makeCompletedFuture { try setOption0(option, value: value) }
        }
        let unchecked = UncheckedChannel(self), value = UncheckedValue(value)
        return eventLoop.submit { try unchecked.channel.setOption0(option, value: value.value) }
    }

    public func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        if eventLoop.inEventLoop {
            return eventLoop.makeCompletedFuture { try getOption0(option) }
        }
        let unchecked = UncheckedChannel(self)
        return eventLoop.submit { UncheckedValue(try unchecked.channel.getOption0(option)) }.map { $0.value }
    }

    public var syncOptions: NIOSynchronousChannelOptions? { SynchronousOptions(channel: self) }

    struct SynchronousOptions: NIOSynchronousChannelOptions {
        let channel: TapstackDatagramChannel
        func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
            channel.eventLoop.preconditionInEventLoop()
            try channel.setOption0(option, value: value)
        }
        func getOption<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
            channel.eventLoop.preconditionInEventLoop()
            return try channel.getOption0(option)
        }
    }

    func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        eventLoop.preconditionInEventLoop()
        guard isOpen else { throw ChannelError.ioOnClosedChannel }
        switch option {
        case let option as ChannelOptions.Types.SocketOption:
            let number = Int(value as! SocketOptionValue)
            switch (option.optionLevel, option.optionName) {
            case (.socket, .so_broadcast): backend.allowsBroadcast = number != 0
            case (.socket, .so_reuseaddr), (.socket, NIOBSDSocket.Option(rawValue: SO_REUSEPORT)): backend.reuseAddress = number != 0
            case (.socket, .so_rcvbuf): backend.receiveBufferSize = number
            case (.ip, NIOBSDSocket.Option(rawValue: IP_TTL)):
                guard (1...255).contains(number) else { throw IOError(errnoCode: EINVAL, reason: "setsockopt") }
                backend.timeToLive = UInt8(number)
            case (.ip, .ip_multicast_ttl):
                guard (0...255).contains(number) else { throw IOError(errnoCode: EINVAL, reason: "setsockopt") }
                backend.multicastTimeToLive = UInt8(number)
            case (.ip, .ip_multicast_loop): backend.multicastLoop = number != 0
            default: throw IOError(errnoCode: ENOPROTOOPT, reason: "setsockopt")
            }
        case _ as ChannelOptions.Types.AutoReadOption:
            let on = value as! Bool
            let wasOn = autoRead
            autoRead = on
            if on && !wasOn && active { pipeline.syncOperations.read() }
            if !on { readPending = false }
        case _ as ChannelOptions.Types.MaxMessagesPerReadOption:
            maxMessagesPerRead = max(1, Int(value as! UInt))
        case _ as ChannelOptions.Types.RecvAllocatorOption:
            recvAllocator = value as! RecvByteBufferAllocator
        case _ as ChannelOptions.Types.WriteBufferWaterMarkOption:
            waterMark = value as! ChannelOptions.Types.WriteBufferWaterMark
            updateWritability()
        case _ as ChannelOptions.Types.AllocatorOption:
            break  // ByteBufferAllocator() is the only allocator
        default:
            throw ChannelError.operationUnsupported
        }
    }

    func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        eventLoop.preconditionInEventLoop()
        guard isOpen else { throw ChannelError.ioOnClosedChannel }
        switch option {
        case let option as ChannelOptions.Types.SocketOption:
            let value: SocketOptionValue
            switch (option.optionLevel, option.optionName) {
            case (.socket, .so_broadcast): value = backend.allowsBroadcast ? 1 : 0
            case (.socket, .so_reuseaddr), (.socket, NIOBSDSocket.Option(rawValue: SO_REUSEPORT)): value = backend.reuseAddress ? 1 : 0
            case (.socket, .so_rcvbuf): value = SocketOptionValue(backend.receiveBufferSize)
            case (.ip, NIOBSDSocket.Option(rawValue: IP_TTL)): value = SocketOptionValue(backend.timeToLive)
            case (.ip, .ip_multicast_ttl): value = SocketOptionValue(backend.multicastTimeToLive)
            case (.ip, .ip_multicast_loop): value = backend.multicastLoop ? 1 : 0
            default: throw IOError(errnoCode: ENOPROTOOPT, reason: "getsockopt")
            }
            return value as! Option.Value
        case _ as ChannelOptions.Types.AutoReadOption: return autoRead as! Option.Value
        case _ as ChannelOptions.Types.MaxMessagesPerReadOption: return UInt(maxMessagesPerRead) as! Option.Value
        case _ as ChannelOptions.Types.RecvAllocatorOption: return recvAllocator as! Option.Value
        case _ as ChannelOptions.Types.WriteBufferWaterMarkOption: return waterMark as! Option.Value
        case _ as ChannelOptions.Types.AllocatorOption: return allocator as! Option.Value
        default: throw ChannelError.operationUnsupported
        }
    }

    // MARK: ChannelCore

    public func localAddress0() throws -> NIOCore.SocketAddress {
        guard let cachedLocal else { throw ChannelError.operationUnsupported }
        return cachedLocal
    }

    public func remoteAddress0() throws -> NIOCore.SocketAddress {
        guard let cachedRemote else { throw ChannelError.operationUnsupported }
        return cachedRemote
    }

    public func register0(promise: EventLoopPromise<Void>?) {
        promise?.succeed(())
        pipeline.syncOperations.fireChannelRegistered()
    }

    public func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) {
        register0(promise: promise)
        becomeActive()
    }

    public func bind0(to address: NIOCore.SocketAddress, promise: EventLoopPromise<Void>?) {
        guard isOpen else { return (promise?.fail(ChannelError.ioOnClosedChannel)) ?? () }
        guard let local = SocketAPI.SocketAddress(address) else {
            promise?.fail(IOError(errnoCode: EAFNOSUPPORT, reason: "bind"))
            return
        }
        control(promise, "bind") { backend throws(SocketError) in try backend.bind(to: local) }
    }

    public func connect0(to address: NIOCore.SocketAddress, promise: EventLoopPromise<Void>?) {
        guard isOpen else { return (promise?.fail(ChannelError.ioOnClosedChannel)) ?? () }
        guard let peer = SocketAPI.SocketAddress(address) else {
            promise?.fail(IOError(errnoCode: EAFNOSUPPORT, reason: "connect"))
            return
        }
        control(promise, "connect") { backend throws(SocketError) in try backend.connect(to: peer) }
    }

    // MARK: Multicast (MulticastChannel)

    /// Joins `group` (an IPv4 multicast address) on the stack's only
    /// interface: `device` must be nil. The stack reports it with IGMP.
    public func joinGroup(_ group: NIOCore.SocketAddress, device: NIONetworkDevice?, promise: EventLoopPromise<Void>?) {
        membership(group, device: device, promise: promise, operation: "IP_ADD_MEMBERSHIP") { backend, address throws(SocketError) in
            try backend.join(group: address)
        }
    }

    /// Leaves `group`; the stack sends IGMP's leave when its last socket leaves.
    public func leaveGroup(_ group: NIOCore.SocketAddress, device: NIONetworkDevice?, promise: EventLoopPromise<Void>?) {
        membership(group, device: device, promise: promise, operation: "IP_DROP_MEMBERSHIP") { backend, address throws(SocketError) in
            try backend.leave(group: address)
        }
    }

    /// NIO's older form: only `interface` nil is the stack's interface.
    @available(*, deprecated, renamed: "joinGroup(_:device:promise:)")
    public func joinGroup(_ group: NIOCore.SocketAddress, interface: NIONetworkInterface?, promise: EventLoopPromise<Void>?) {
        guard interface == nil else { return (promise?.fail(IOError(errnoCode: ENODEV, reason: "IP_ADD_MEMBERSHIP"))) ?? () }
        joinGroup(group, device: nil, promise: promise)
    }

    @available(*, deprecated, renamed: "leaveGroup(_:device:promise:)")
    public func leaveGroup(_ group: NIOCore.SocketAddress, interface: NIONetworkInterface?, promise: EventLoopPromise<Void>?) {
        guard interface == nil else { return (promise?.fail(IOError(errnoCode: ENODEV, reason: "IP_DROP_MEMBERSHIP"))) ?? () }
        leaveGroup(group, device: nil, promise: promise)
    }

    private func membership(_ group: NIOCore.SocketAddress, device: NIONetworkDevice?, promise: EventLoopPromise<Void>?,
                            operation: String,
                            _ body: @escaping @Sendable (DatagramBackend, IPv4Address) throws(SocketError) -> Void) {
        if eventLoop.inEventLoop {
            guard isOpen else { return (promise?.fail(ChannelError.ioOnClosedChannel)) ?? () }
            if let device { return (promise?.fail(NIOMulticastNotSupportedError(device: device))) ?? () }
            guard let address = SocketAPI.SocketAddress(group)?.address, address.isMulticast else {
                promise?.fail(IOError(errnoCode: EINVAL, reason: operation))
                return
            }
            control(promise, operation, activates: false) { backend throws(SocketError) in try body(backend, address) }
        } else {
            eventLoop.execute { self.membership(group, device: device, promise: promise, operation: operation, body) }
        }
    }

    /// Runs bind or connect: in place for an in-process stack, on a thread
    /// of its own for the service (a request and its reply), so the loop never waits.
    private func control(_ promise: EventLoopPromise<Void>?, _ operation: String, activates: Bool = true,
                         _ body: @escaping @Sendable (DatagramBackend) throws(SocketError) -> Void) {
        let backend = self.backend
        let finish: @Sendable (SocketError?) -> Void = { [unchecked = UncheckedChannel(self)] error in
            let channel = unchecked.channel
            channel.eventLoop.preconditionInEventLoop()
            if let error {
                promise?.fail(error.ioError(operation))
                return
            }
            guard activates else { return (promise?.succeed(())) ?? () }
            channel.refreshAddresses()
            // Active before the caller's future completes (it may ask at once,
            // from another thread); channelActive follows, as in NIO's channels.
            let activating = channel.isOpen && !channel.active
            if activating { channel.active = true }
            promise?.succeed(())
            if activating { channel.fireActive() }
        }
        guard backend.controlIsRemote else {
            do throws(SocketError) { try body(backend); finish(nil) } catch { finish(error) }
            return
        }
        let loop = eventLoop
        JoinableThread(name: "tapstack-nio-ctl") {
            let failure: SocketError?
            do throws(SocketError) { try body(backend); failure = nil } catch { failure = error }
            loop.execute { finish(failure) }
        }.detach()
    }

    private func refreshAddresses() {
        let local = backend.localAddress.map(NIOCore.SocketAddress.init)
        let remote = backend.remoteAddress.map(NIOCore.SocketAddress.init)
        addresses.withLock { $0 = (local, remote) }
    }

    private func becomeActive() {
        guard isOpen, !active else { return }
        active = true
        fireActive()
    }

    private func fireActive() {
        pipeline.syncOperations.fireChannelActive()
        if autoRead { pipeline.syncOperations.read() }
    }

    public func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard isOpen else { return (promise?.fail(ChannelError.ioOnClosedChannel)) ?? () }
        // As NIO's own datagram channels: anything but an envelope of bytes is a programming error.
        let envelope = unwrapData(data, as: AddressedEnvelope<ByteBuffer>.self)
        guard SocketAPI.SocketAddress(envelope.remoteAddress) != nil else {
            promise?.fail(IOError(errnoCode: EAFNOSUPPORT, reason: "sendmsg"))
            return
        }
        pendingWrites.append((envelope, promise))
        pendingBytes += envelope.data.readableBytes
        updateWritability()
    }

    public func flush0() {
        guard isOpen else { return }
        flushedCount = pendingWrites.count
        writeFlushed()
    }

    /// Sends flushed writes until none are left or the link is full, in one
    /// batch (in-process: one hold of the stack for all of them).
    private func writeFlushed() {
        if flushedCount > 0 {
            var failures: [(Int, SocketError)] = []
            let base = pendingWrites.startIndex
            let (taken, blocked) = backend.send(count: flushedCount, { index in
                let envelope = pendingWrites[pendingWrites.index(base, offsetBy: index)].0
                // The envelope stays in `pendingWrites` until after the send:
                // its buffer's storage does not move while the stack copies it.
                let bytes = envelope.data.withUnsafeReadableBytes { $0 }
                return (bytes, SocketAPI.SocketAddress(envelope.remoteAddress))
            }, failed: { index, error in failures.append((index, error)) })
            var nextFailure = 0
            for index in 0..<taken {
                let (envelope, promise) = pendingWrites.removeFirst()
                pendingBytes -= envelope.data.readableBytes
                if nextFailure < failures.count, failures[nextFailure].0 == index {
                    promise?.fail(failures[nextFailure].1.ioError("sendmsg"))
                    nextFailure += 1
                } else {
                    promise?.succeed(())
                }
            }
            flushedCount -= taken
            if blocked {
                // The link is full: keep the rest until the stack says `.writable`.
                linkFull = true
                backend.armNotification(.writable)
                updateWritability()
                return
            }
        }
        linkFull = false
        updateWritability()
    }

    private func updateWritability() {
        let now: Bool
        if linkFull || pendingBytes > waterMark.high {
            now = false
        } else if !writable {
            now = pendingBytes <= waterMark.low
        } else {
            now = true
        }
        guard now != writable else { return }
        writable = now
        pipeline.syncOperations.fireChannelWritabilityChanged()
    }

    public func read0() {
        guard isOpen, active else { return }
        readPending = true
        scheduleRead()
    }

    /// Reads on the next turn of the loop (data may already be queued: the
    /// stack told us before anyone asked to read).
    private func scheduleRead() {
        guard !readScheduled else { return }
        readScheduled = true
        let unchecked = UncheckedChannel(self)
        eventLoop.execute {
            let channel = unchecked.channel
            channel.readScheduled = false
            channel.readFromSocket()
        }
    }

    /// Reads up to `maxMessagesPerRead` datagrams (in-process: under one
    /// hold of the stack), then `channelReadComplete`.
    private func readFromSocket() {
        guard isOpen, active, readPending else { return }
        readPending = false  // one read() asks for one batch; autoRead asks again after it
        var buffers: [ByteBuffer] = []
        var sources: [SocketAPI.SocketAddress] = []
        buffers.reserveCapacity(maxMessagesPerRead)
        sources.reserveCapacity(maxMessagesPerRead)
        let read: Int
        do throws(SocketError) {
            read = try backend.receive(upTo: maxMessagesPerRead, into: { _ in
                buffers.append(recvAllocator.buffer(allocator: allocator))
                // Writes into the buffer's own storage, held uniquely by `buffers`.
                return buffers[buffers.count - 1].withUnsafeMutableWritableBytes { $0 }
            }, received: { index, length, source in
                buffers[index].moveWriterIndex(forwardBy: min(length, buffers[index].writableBytes))
                sources.append(source)
            })
        } catch .closed {
            close0(error: ChannelError.eof, mode: .all, promise: nil)
            return
        } catch .serviceUnavailable {
            // The stack's service went away: nothing more will come. Say so
            // once and close, rather than read the dead channel forever.
            pipeline.syncOperations.fireErrorCaught(SocketError.serviceUnavailable.ioError("recvmsg"))
            close0(error: ChannelError.eof, mode: .all, promise: nil)
            return
        } catch {
            // An ICMP error for an earlier datagram (a connected socket's
            // port unreachable): reported, and the channel stays open, as NIO's does.
            pipeline.syncOperations.fireErrorCaught(error.ioError("recvmsg"))
            readPending = true
            scheduleRead()
            return
        }
        guard read > 0 else {
            readPending = true  // nothing there: this read() waits for the next datagram
            backend.armNotification(.readable)
            return
        }
        for index in 0..<read {
            _ = recvAllocator.record(actualReadBytes: buffers[index].readableBytes)
            pipeline.syncOperations.fireChannelRead(NIOAny(AddressedEnvelope(remoteAddress: NIOCore.SocketAddress(sources[index]),
                                                                             data: buffers[index])))
            guard isOpen, active else { return }
        }
        finishReadBatch()
    }

    private func finishReadBatch() {
        pipeline.syncOperations.fireChannelReadComplete()
        if autoRead && isOpen && active { pipeline.syncOperations.read() }
    }

    /// The stack (or the service) says the socket may be ready.
    func readinessChanged(_ events: ReadinessEvents) {
        guard isOpen else { return }
        if events.contains(.writable) || linkFull { writeFlushed() }
        if events.contains(.readable) || events.contains(.error), readPending { readFromSocket() }
        if events.contains(.error), !readPending, let error = backend.takeError() {
            pipeline.syncOperations.fireErrorCaught(error.ioError("recvmsg"))
        }
    }

    public func close0(error: Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard isOpen else { return (promise?.fail(ChannelError.alreadyClosed)) ?? () }
        guard mode == .all else { return (promise?.fail(ChannelError.operationUnsupported)) ?? () }
        isOpen = false
        let wasActive = active
        active = false
        backend.close()  // the port is free from here on
        while let (_, pending) = pendingWrites.popFirst() { pending?.fail(error) }
        pendingBytes = 0
        flushedCount = 0
        promise?.succeed(())
        if wasActive { pipeline.syncOperations.fireChannelInactive() }
        pipeline.syncOperations.fireChannelUnregistered()
        let unchecked = UncheckedChannel(self)
        eventLoop.execute {
            let channel = unchecked.channel
            channel.removeHandlers(pipeline: channel.pipeline)
            channel.closePromise.succeed(())
        }
    }

    public func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func channelRead0(_ data: NIOAny) {}  // reached the head unhandled: dropped, as NIO's channels do

    public func errorCaught0(error: Error) {}
}

/// Carries a value to the event loop that Swift cannot prove sendable; the
/// channel's state is only touched there.
struct UncheckedChannel: @unchecked Sendable {
    let channel: TapstackDatagramChannel
    init(_ channel: TapstackDatagramChannel) { self.channel = channel }
}

struct UncheckedValue<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
