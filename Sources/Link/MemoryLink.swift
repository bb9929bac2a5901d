/// A link with no device: the test plays the wire, injecting frames into the
/// stack and collecting what the stack transmits.
///
/// The test thread is the only producer of `rx` and the only consumer of `tx`.
public final class MemoryLink: LinkEndpoint {
    /// Frames the test injects for the stack.
    public let rx: FrameRing
    /// Frames the stack sent, for the test to take.
    public let tx: FrameRing
    /// Wakes the stack thread when the test injected a frame.
    public let rxWakeup = Wakeup()
    /// Signalled whenever the stack transmitted.
    public let txWakeup = Wakeup()
    /// The largest frame either ring carries.
    public let maximumFrameLength: Int
    private let transmitSpace = TransmitSpaceNotifier()
    /// Whether `inject` offers the frame to the stack on the injecting thread.
    public let handsOverOnInject: Bool
    private let receiveHandOver = ReceiveHandOver()

    /// A link with rings of `capacity` frames.
    /// - Parameter handsOverOnInject: `inject` lets the stack handle the
    ///   frame on the injecting thread when the stack is free, as the TAP
    ///   driver does on its thread; otherwise the stack thread is woken.
    public init(capacity: Int = 256, maximumFrameLength: Int = 1514, handsOverOnInject: Bool = false) {
        self.maximumFrameLength = maximumFrameLength
        self.handsOverOnInject = handsOverOnInject
        rx = FrameRing(capacity: capacity, slotSize: maximumFrameLength)
        tx = FrameRing(capacity: capacity, slotSize: maximumFrameLength)
    }

    public func transmitted() { txWakeup.signal() }

    public func setTransmitSpaceHandler(_ handler: @escaping @Sendable () -> Void) { transmitSpace.set(handler) }

    public func setReceiveHandler(_ handler: @escaping @Sendable () -> Bool) { receiveHandOver.set(handler) }

    /// Delivers a frame to the stack; false when the RX ring is full.
    @discardableResult
    public func inject(_ frame: [UInt8]) -> Bool {
        let ok = frame.withUnsafeBytes { rx.push($0) }
        if !(handsOverOnInject && receiveHandOver.current?() == true) {
            rxWakeup.signal()
        }
        return ok
    }

    /// Takes the oldest transmitted frame, waiting up to `timeoutMilliseconds`.
    public func nextTransmitted(timeoutMilliseconds: Int32 = 1000) -> [UInt8]? {
        var remaining = timeoutMilliseconds
        while true {
            if let frame = tx.pop() {
                transmitSpace.notifyIfWaiting(tx)
                return frame
            }
            guard remaining > 0 else { return nil }
            txWakeup.wait(timeoutMilliseconds: 10) { !tx.isEmpty }
            remaining -= 10
        }
    }
}
