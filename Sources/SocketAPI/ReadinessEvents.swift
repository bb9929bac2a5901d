/// Readiness events of a socket, as a mask (gVisor's waiter.EventMask).
public struct ReadinessEvents: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// A datagram is queued.
    public static let readable = ReadinessEvents(rawValue: 1 << 0)
    /// A send would not block.
    public static let writable = ReadinessEvents(rawValue: 1 << 1)
    /// An asynchronous error (e.g. ICMP port unreachable) is pending.
    public static let error = ReadinessEvents(rawValue: 1 << 2)
    /// The socket was closed.
    public static let closed = ReadinessEvents(rawValue: 1 << 3)

    public var description: String {
        var names: [String] = []
        if contains(.readable) { names.append("readable") }
        if contains(.writable) { names.append("writable") }
        if contains(.error) { names.append("error") }
        if contains(.closed) { names.append("closed") }
        return "[" + names.joined(separator: ",") + "]"
    }
}
