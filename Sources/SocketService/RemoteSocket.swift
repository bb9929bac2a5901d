import CTapstackChannel
import Glibc
import Sockets
import Stack
import Synchronization

/// One client connection of the socket service and, once opened, the stack
/// socket it drives. Touched only by the service thread, except `flag`,
/// `deliveryScheduled` and what `delivery` guards, which the stack's
/// executor also touches when it puts received datagrams in the region and
/// takes the client's datagrams from it.
final class RemoteSocket: @unchecked Sendable {
    let id: UInt64
    /// The control connection.
    let control: Int32
    /// The client process (SO_PEERCRED), for `tapstack ss`; -1 if unknown.
    var pid: Int32 = -1
    var uid: UInt32 = 0
    /// The service's end of the data channel; -1 until opened.
    var data: Int32 = -1
    var socket: UDPSocket?
    var callbackToken: Int?
    /// Epoll interest of `data` (TSV_IN, TSV_OUT).
    var dataInterest: UInt32 = 0
    /// Datagrams from the client the link had no room for, oldest first;
    /// while any wait, the data channel is not read (backpressure).
    var waitingForStack: [(destination: SocketAddress?, options: DatagramSendOptions, payload: [UInt8])] = []
    /// The client wants every datagram framed with its facts (TSP_OPT_WANT_INFO).
    var wantsInfo = false
    /// Guards what the stack's executor touches too: `socket` being taken
    /// away, `region` and both its rings, `receivesInRegion`,
    /// `receiveFallback`, `waitingForClient` and `waitingForStack`.
    /// Recursive: an error queued while flushing flushes again.
    let delivery = RecursiveLock()
    /// Takes the client's datagrams from its region on the executor, once
    /// the region exists (registered with the host until release).
    var sender: RegionSender?
    /// The executor found the client's ring broken: the service thread releases the socket.
    var regionFailed = false
    /// A hint for the readiness callback (which may not take `delivery`):
    /// the client reads its region and nothing waits for the channel, so
    /// the executor can deliver. `deliverInRegion` checks again under the lock.
    let deliversInRegion = Atomic<Bool>(false)
    /// A doorbell counted in the region that the full channel did not take:
    /// sent once the channel has room.
    var doorbellOwed = false
    /// The executor put datagrams in an empty ring toward the client this
    /// turn: it rings the doorbell at the end of the turn.
    var doorbellDue = false
    /// The executor waits for the client's answer to what it delivered
    /// (its receive busy-polls: `awaitAnswer`), and how many such waits in a
    /// row ended without one. Executor thread only.
    var answerAwaited = false
    var unansweredWaits = 0
    /// When the executor's wait for that answer ends (monotonic ns). Executor thread only.
    var answerDeadline: UInt64 = 0
    /// A delivery by the executor is queued (once until it runs).
    let deliveryScheduled = Atomic<Bool>(false)
    /// Messages for the client its channel had no room for, oldest first;
    /// while any wait, the stack socket is not drained.
    var waitingForClient: [[UInt8]] = []
    /// The socket's shared region (TSP_RING), once the client asked for one.
    var region: OpaquePointer?
    /// The client asked for received datagrams in the region.
    var receivesInRegion = false
    /// Received datagrams go on the channel until the client has read all
    /// that is there (the ring was full, or it just switched): order.
    var receiveFallback = false
    /// Set by the stack's readiness callback; the service clears it when it looks.
    let flag = ReadyFlag()

    /// Sets `deliversInRegion` from the state `delivery` guards; call holding it.
    func updateDeliveryHint() {
        deliversInRegion.store(region != nil && receivesInRegion && !receiveFallback && waitingForClient.isEmpty && !doorbellOwed,
                               ordering: .relaxed)
    }

    init(id: UInt64, control: Int32) {
        self.id = id
        self.control = control
    }
}

/// Marks a socket as having news from the stack, once until looked at, so a
/// burst of datagrams queues its socket once.
final class ReadyFlag: Sendable {
    private let raised = Atomic<Bool>(false)

    /// Raises the flag; true when it was down.
    func raise() -> Bool { !raised.exchange(true, ordering: .acquiringAndReleasing) }

    /// Lowers it before the service looks at the socket.
    func lower() { raised.store(false, ordering: .releasing) }
}

/// A mutex the thread holding it may take again.
final class RecursiveLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() {
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Takes the lock unless another thread holds it; true when taken.
    func tryLock() -> Bool { pthread_mutex_trylock(mutex) == 0 }

    func unlock() { pthread_mutex_unlock(mutex) }

    func withLock<Result>(_ body: () -> Result) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}
