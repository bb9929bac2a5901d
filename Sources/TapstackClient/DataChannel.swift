import Glibc
import SocketAPI
import Synchronization

/// A socket's data channel descriptor, closed only once no call is using it.
///
/// A `close()` on one thread while another thread is inside `send` must not
/// close the descriptor under that call: the process could reuse the number
/// for a file it opens meanwhile, and the send would write a datagram into
/// it. Calls take a use of the descriptor; `close()` marks it closed (later
/// uses throw `.closed`) and whoever ends the last use closes it.
final class DataChannel: Sendable {
    let descriptor: Int32
    /// Uses in progress times two, plus one once closed.
    private let state = Atomic<Int>(0)

    init(_ descriptor: Int32) {
        self.descriptor = descriptor
    }

    /// Runs `body` with the descriptor, which stays open until it returns.
    /// - Throws: `.closed` once `close()` was called.
    func use<Result>(_ body: (Int32) throws(SocketError) -> Result) throws(SocketError) -> Result {
        var current = state.load(ordering: .relaxed)
        while true {
            if current & 1 != 0 { throw .closed }
            let (exchanged, original) = state.compareExchange(
                expected: current, desired: current + 2, ordering: .acquiring)
            if exchanged { break }
            current = original
        }
        defer {
            if state.subtract(2, ordering: .acquiringAndReleasing).newValue == 1 { Glibc.close(descriptor) }
        }
        return try body(descriptor)
    }

    /// Marks the channel closed; closes the descriptor now, or when the last use ends.
    func close() {
        let before = state.bitwiseOr(1, ordering: .acquiringAndReleasing).oldValue
        if before == 0 { Glibc.close(descriptor) }
    }

    var isClosed: Bool { state.load(ordering: .relaxed) & 1 != 0 }
}
