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
}
