import Synchronization

/// What the stack needs from a link: a pair of SPSC frame rings and a way to
/// be woken.
///
/// The link produces into `rx` and signals `rxWakeup`; the stack consumes
/// `rx`, produces into `tx` and calls `transmitted()` once per batch so the
/// link can send.
public protocol LinkEndpoint: AnyObject, Sendable {
    /// Frames from the wire to the stack.
    var rx: FrameRing { get }
    /// Frames from the stack to the wire.
    var tx: FrameRing { get }
    /// Signalled by the link when it published frames into `rx`.
    var rxWakeup: Wakeup { get }
    /// Called by the stack after it published frames into `tx`.
    func transmitted()
    /// Largest frame the link carries (without FCS).
    var maximumFrameLength: Int { get }
    /// Registers what to call (on the link's thread) when `tx` had been
    /// full and the link freed slots. Call before the link starts.
    func setTransmitSpaceHandler(_ handler: @escaping @Sendable () -> Void)
    /// Registers what the link's own thread may call right after it
    /// published frames into `rx`, to hand them to the stack without waking
    /// another thread; the handler returns true when `rx` is then empty (no
    /// wake-up needed). Links without a thread of their own ignore it.
    /// Call before the link starts.
    func setReceiveHandler(_ handler: @escaping @Sendable () -> Bool)
}

extension LinkEndpoint {
    public func setReceiveHandler(_ handler: @escaping @Sendable () -> Bool) {}
}

/// Holds a link's receive hand-over (see `LinkEndpoint.setReceiveHandler`);
/// set once before the link starts, read by the link's thread.
public final class ReceiveHandOver: Sendable {
    private let handler = Mutex<(@Sendable () -> Bool)?>(nil)

    public init() {}

    public func set(_ handler: @escaping @Sendable () -> Bool) { self.handler.withLock { $0 = handler } }

    /// The handler, for a link thread to keep once it starts.
    public var current: (@Sendable () -> Bool)? { handler.withLock { $0 } }
}

/// Holds a link's transmit-space handler; set once, read by the link's thread.
public final class TransmitSpaceNotifier: Sendable {
    private let handler = Mutex<(@Sendable () -> Void)?>(nil)

    public init() {}

    public func set(_ handler: @escaping @Sendable () -> Void) { self.handler.withLock { $0 = handler } }

    /// Calls the handler if the ring's producer was waiting for space.
    public func notifyIfWaiting(_ ring: FrameRing) {
        guard ring.takeProducerWaiting() else { return }
        handler.withLock { $0 }?()
    }
}
