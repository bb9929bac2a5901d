import CTapstackChannel
import Glibc
import Sockets
import Synchronization
import Wire

/// The stack-to-client half of a served socket. It runs on the stack thread,
/// as deferred work a readiness callback schedules (like the in-process echo
/// service), so a datagram that reaches the stack goes on to the client's
/// channel without a hand-off to the service thread.
///
/// Lock order: `state`, then the stack's lock. The service thread takes
/// `state` to queue an error, to ask for a flush when the channel drained,
/// and to release the socket (after which nothing touches the channel).
final class ToClient: @unchecked Sendable {
    private let socket: UDPSocket
    private let host: NetworkHost
    private let counters: ServiceCounters
    private let batch: StackThreadBatch
    private let epollFD: Int32
    /// Epoll tag under which the channel's writability is reported.
    private let writableTag: UInt64

    private struct State {
        /// Our own duplicate of the service's end of the channel: closed only
        /// here, under this lock, so it is never a reused number.
        var fd: Int32
        /// Messages the full channel did not take yet, oldest first.
        var waiting: [[UInt8]] = []
        /// Whether epoll watches `fd` for room.
        var watchingForRoom = false
    }
    private let state: Mutex<State>
    /// Guarded by the stack's lock: a flush is already queued.
    nonisolated(unsafe) private var scheduled = false

    static let headerSize = MemoryLayout<tsp_datagram_header>.size

    init(socket: UDPSocket, host: NetworkHost, channel: Int32, counters: ServiceCounters,
         batch: StackThreadBatch, epollFD: Int32, writableTag: UInt64) {
        self.socket = socket
        self.host = host
        self.counters = counters
        self.batch = batch
        self.epollFD = epollFD
        self.writableTag = writableTag
        state = Mutex(State(fd: dup(channel)))
    }

    /// Queues a flush on the stack thread. Call from inside the stack
    /// (a readiness callback, or `host.withStack`).
    func schedule() {
        guard !scheduled else { return }
        scheduled = true
        host.executeOnStackThread { [self] in flush() }
    }

    /// Queues an asynchronous error for the client's next receive. Like a
    /// kernel socket's pending error, at most one waits. Service thread.
    func queueError(_ error: SocketError) {
        let queued: Bool = state.withLock { state in
            let kindOffset = MemoryLayout<tsp_datagram_header>.offset(of: \tsp_datagram_header.kind)!
            guard state.fd >= 0, !state.waiting.contains(where: {
                $0.count == Self.headerSize && $0[kindOffset] == UInt8(TSP_ERROR.rawValue)
            }) else { return false }
            var header = tsp_datagram_header()
            header.kind = UInt8(TSP_ERROR.rawValue)
            header.error = UInt8(truncatingIfNeeded: error.errno)
            state.waiting.append(withUnsafeBytes(of: header) { Array($0) })
            return true
        }
        guard queued else { return }
        counters.errorsDelivered.add(1, ordering: .relaxed)
        host.withStack { _ in schedule() }
    }

    /// The channel has room again (epoll said so). Service thread.
    func channelDrained() {
        host.withStack { _ in schedule() }
    }

    /// Stops for good: nothing is sent to the client after this returns. Service thread.
    func release() {
        state.withLock { state in
            guard state.fd >= 0 else { return }
            if state.watchingForRoom { _ = tsv_epoll_set(epollFD, 3, state.fd, 0, 0) }
            close(state.fd)
            state.fd = -1
            state.waiting = []
        }
    }

    /// Passes what waits, then the stack socket's datagrams (and errors), to
    /// the channel until the socket is empty or the channel full (then
    /// watches the channel for room). Stack thread, outside the stack's lock.
    private func flush() {
        host.withStack { _ in scheduled = false }
        state.withLock { state in
            guard state.fd >= 0 else { return }
            while let first = state.waiting.first {
                let n = first.withUnsafeBytes { Glibc.send(state.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                if n < 0 {
                    if errno == EAGAIN { watchForRoom(&state, true) }
                    return  // EPIPE etc.: the service sees the hang-up
                }
                state.waiting.removeFirst()
            }
            watchForRoom(&state, false)
            drain(&state)
        }
    }

    private func drain(_ state: inout State) {
        let buffers = batch.pointer
        let count = StackThreadBatch.count, slotSize = StackThreadBatch.slotSize, headerSize = Self.headerSize
        while true {
            var taken: UInt32 = 0
            var failed: SocketError?
            do throws(SocketError) {
                taken = UInt32(try socket.receive(upTo: Int(count), into: { index in
                    UnsafeMutableRawBufferPointer(start: tsv_batch_slot(buffers, UInt32(index))! + headerSize,
                                                  count: slotSize - headerSize)
                }, received: { index, length, source in
                    var header = tsp_datagram_header()
                    header.address = source.address.rawValue.bigEndian
                    header.port = source.port
                    tsv_batch_slot(buffers, UInt32(index))!.storeBytes(of: header, as: tsp_datagram_header.self)
                    tsv_batch_set_length(buffers, UInt32(index), UInt32(headerSize + min(length, slotSize - headerSize)))
                }))
            } catch {
                if error != .wouldBlock && error != .closed { failed = error }
            }
            if taken > 0 {
                let sent = max(0, Int(tsv_batch_send(state.fd, buffers, 0, taken)))
                counters.datagramsReceived.add(UInt64(sent), ordering: .relaxed)
                if sent < taken {
                    if sent == 0 && errno != EAGAIN { return }  // the client is gone; its hang-up follows
                    for index in UInt32(sent)..<taken {
                        let slot = UnsafeRawPointer(tsv_batch_slot(buffers, index)!)
                        state.waiting.append(Array(UnsafeRawBufferPointer(start: slot, count: Int(tsv_batch_length(buffers, index)))))
                    }
                    watchForRoom(&state, true)
                }
            }
            if let failed {
                var header = tsp_datagram_header()
                header.kind = UInt8(TSP_ERROR.rawValue)
                header.error = UInt8(truncatingIfNeeded: failed.errno)
                counters.errorsDelivered.add(1, ordering: .relaxed)
                let n = state.waiting.isEmpty
                    ? withUnsafeBytes(of: header) { Glibc.send(state.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                    : -1
                if n < 0 {
                    state.waiting.append(withUnsafeBytes(of: header) { Array($0) })
                    watchForRoom(&state, true)
                }
                return
            }
            if !state.waiting.isEmpty || taken < count { return }
        }
    }

    private func watchForRoom(_ state: inout State, _ on: Bool) {
        guard on != state.watchingForRoom else { return }
        state.watchingForRoom = on
        _ = tsv_epoll_set(epollFD, on ? 1 : 3, state.fd, UInt32(TSV_OUT), writableTag)
    }
}

/// Message buffers for the stack thread's sends to clients (one set per
/// service: the stack thread runs one flush at a time).
final class StackThreadBatch: @unchecked Sendable {
    static let count: UInt32 = 16
    static let slotSize = 65536
    let pointer: OpaquePointer = tsv_batch_create(StackThreadBatch.count, UInt32(StackThreadBatch.slotSize))!

    deinit { tsv_batch_destroy(pointer) }
}
