import Glibc

/// What a datagram socket provides without waiting, and how it waits; the
/// forms that wait (timeouts, backpressure, async) are built on it once, here,
/// for the in-process `UDPSocket` and for `TapstackClient.UDPSocket`.
public protocol DatagramSocket: AnyObject, Sendable {
    /// Sends `payload` to `destination` (nil: the connected peer) without
    /// waiting; throws `.wouldBlock` when there is no room now.
    @discardableResult
    func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress?) throws(SocketError) -> Int

    /// Takes the oldest datagram without waiting; throws `.wouldBlock` when none is queued.
    func receive() throws(SocketError) -> Datagram

    /// Sleeps until one of `events` may have become true, or `timeoutMilliseconds`
    /// passed (negative: no limit). Returns early rather than late, and at
    /// once when one is already true: readiness that came after the caller's
    /// `.wouldBlock` is not missed. Any number of threads may wait at once.
    func wait(for events: ReadinessEvents, timeoutMilliseconds: Int32)

    /// Suspends until one of `events` may have become true, without blocking a thread.
    /// - Throws: `.cancelled` when the task is cancelled.
    func waitAsync(for events: ReadinessEvents) async throws(SocketError)
}

extension DatagramSocket {
    /// Sends the bytes of `payload` to `destination` without waiting; see `send(_:to:)`.
    @discardableResult
    public func send(_ payload: [UInt8], to destination: SocketAddress) throws(SocketError) -> Int {
        try withBytes(payload) { bytes throws(SocketError) in try send(bytes, to: destination) }
    }

    /// Sends to the connected peer without waiting.
    /// - Throws: `.notConnected`, otherwise as `send(_:to:)`.
    @discardableResult
    public func send(_ payload: [UInt8]) throws(SocketError) -> Int {
        try withBytes(payload) { bytes throws(SocketError) in try send(bytes, to: nil) }
    }

    /// Sends, waiting while there is no room (backpressure) for at most
    /// `timeout` (nil: as long as it takes). `destination` nil sends to the peer.
    /// - Throws: `.wouldBlock` when the timeout passes; otherwise as `send(_:to:)`.
    @discardableResult
    public func send(_ payload: [UInt8], to destination: SocketAddress? = nil, timeout: Duration?) throws(SocketError) -> Int {
        let deadline = Deadline(timeout)
        while true {
            do throws(SocketError) {
                return try withBytes(payload) { bytes throws(SocketError) in try send(bytes, to: destination) }
            } catch .wouldBlock {
                try wait(for: [.writable, .error, .closed], until: deadline)
            }
        }
    }

    /// Sends, suspending while there is no room, without blocking a thread.
    /// `destination` nil sends to the peer.
    /// - Throws: `.cancelled` when the task is cancelled; otherwise as `send(_:to:)`.
    @discardableResult
    public func sendWhenWritable(_ payload: [UInt8], to destination: SocketAddress? = nil) async throws(SocketError) -> Int {
        while true {
            do throws(SocketError) {
                return try withBytes(payload) { bytes throws(SocketError) in try send(bytes, to: destination) }
            } catch .wouldBlock {
                try await waitAsync(for: [.writable, .error, .closed])
            }
        }
    }

    /// Waits for a datagram for at most `timeout` (nil: forever), sleeping
    /// until the socket is readable.
    /// - Throws: `.wouldBlock` when the timeout passes; otherwise as `receive()`.
    public func receive(timeout: Duration?) throws(SocketError) -> Datagram {
        let deadline = Deadline(timeout)
        while true {
            do throws(SocketError) {
                return try receive()
            } catch .wouldBlock {
                try wait(for: [.readable, .error, .closed], until: deadline)
            }
        }
    }

    /// Suspends until a datagram arrives, without blocking a thread.
    /// - Throws: `.cancelled` when the task is cancelled; otherwise as `receive()`.
    public func receiveNext() async throws(SocketError) -> Datagram {
        while true {
            do throws(SocketError) {
                return try receive()
            } catch .wouldBlock {
                try await waitAsync(for: [.readable, .error, .closed])
            }
        }
    }

    /// The datagrams as they arrive; the sequence ends when the socket is
    /// closed and throws on any other error (`.cancelled` on task cancellation).
    public var datagrams: DatagramSequence<Self> { DatagramSequence(socket: self) }

    /// Sleeps in `wait` until `deadline`; throws `.wouldBlock` once it has passed.
    private func wait(for events: ReadinessEvents, until deadline: Deadline) throws(SocketError) {
        let timeout = deadline.pollTimeout
        guard timeout != 0 else { throw .wouldBlock }
        wait(for: events, timeoutMilliseconds: timeout)
    }
}

/// An `AsyncSequence` of a socket's datagrams.
public struct DatagramSequence<Socket: DatagramSocket>: AsyncSequence, Sendable {
    public typealias Element = Datagram
    let socket: Socket

    /// Iterates the datagrams; `next()` suspends until one arrives, and
    /// returns nil once the socket is closed.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let socket: Socket

        public mutating func next() async throws(SocketError) -> Datagram? {
            do throws(SocketError) {
                return try await socket.receiveNext()
            } catch .closed {
                return nil
            }
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(SocketError) -> Datagram? {
            do throws(SocketError) {
                return try await socket.receiveNext()
            } catch .closed {
                return nil
            }
        }
    }

    /// An iterator over the socket's datagrams.
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(socket: socket) }
}

/// Runs `body` over the bytes of `array`, keeping typed throws.
public func withBytes<R>(_ array: [UInt8], _ body: (UnsafeRawBufferPointer) throws(SocketError) -> R) throws(SocketError) -> R {
    let result: Result<R, SocketError> = array.withUnsafeBytes { bytes in
        do throws(SocketError) { return .success(try body(bytes)) } catch { return .failure(error) }
    }
    return try result.get()
}
