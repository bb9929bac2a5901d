/// A point in time on a monotonic clock, in nanoseconds. The core never reads
/// a clock: callers pass the current instant in, which lets tests and pcap
/// replay drive time deterministically.
public struct StackInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static func seconds(_ s: Double) -> StackInstant { StackInstant(nanoseconds: UInt64(s * 1e9)) }
    public static let zero = StackInstant(nanoseconds: 0)

    public static func < (a: StackInstant, b: StackInstant) -> Bool { a.nanoseconds < b.nanoseconds }

    public static func + (a: StackInstant, d: StackDuration) -> StackInstant {
        StackInstant(nanoseconds: a.nanoseconds &+ d.nanoseconds)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    public func since(_ earlier: StackInstant) -> StackDuration {
        StackDuration(nanoseconds: nanoseconds > earlier.nanoseconds ? nanoseconds - earlier.nanoseconds : 0)
    }

    public var description: String { "\(Double(nanoseconds) / 1e9)s" }
}

/// A span of time in nanoseconds.
public struct StackDuration: Comparable, Hashable, Sendable {
    public var nanoseconds: UInt64
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }
    public static func seconds(_ s: Double) -> StackDuration { StackDuration(nanoseconds: UInt64(s * 1e9)) }
    public static func milliseconds(_ ms: Int) -> StackDuration { StackDuration(nanoseconds: UInt64(ms) * 1_000_000) }
    public static func < (a: StackDuration, b: StackDuration) -> Bool { a.nanoseconds < b.nanoseconds }
}
