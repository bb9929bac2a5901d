import CTapstackChannel
import TapstackProtocol
import FoundationEssentials
import Glibc
import Host
import SocketAPI
import Sockets
import Stack
import Synchronization
import Wire

/// Serves the stack's UDP sockets to other processes over a Unix-domain
/// socket (see `tapstack_channel.h` for the protocol).
///
/// Each client socket is a stack `UDPSocket` plus two kernel sockets: a
/// control connection (one request, one reply: open, bind, connect, options,
/// names) and a SOCK_SEQPACKET data channel on which every datagram crosses
/// as one message. The kernel buffers of the data channel give backpressure
/// and readiness in both directions: the service stops reading a client's
/// channel while the link is full, and stops draining the stack socket while
/// the client's channel is full (then the stack's receive queue bound and its
/// drop counter apply, as with an unread socket).
///
/// One service thread owns every connection and sleeps in epoll when idle.
/// Stack readiness callbacks only raise a flag and wake it. (Running the
/// stack-to-client half on the stack thread instead, as the in-process echo
/// does, was measured: better ping-pong latency, ~20 % less throughput with
/// many datagrams in flight on two cores; throughput won.)
public final class SocketService: @unchecked Sendable {
    /// Where clients connect.
    public let path: String
    public let host: NetworkHost
    /// Connections (and so sockets) served at once; more are refused.
    public let maximumSockets: Int
    public let counters = ServiceCounters()
    /// Every counter `tapstack stats` reports: the stack's, and whatever the
    /// process adds (link, device, capture); the service's own follow.
    let counterSource: @Sendable () -> [(name: String, value: UInt64)]

    /// The device's name and kernel index, told to clients on open.
    let interfaceName: String
    let interfaceIndex: Int32
    let listenFD: Int32
    let epollFD: Int32
    let news = News()
    let stopping = Atomic<Bool>(false)
    let stopped = Atomic<Bool>(false)
    // Service thread only (and `init`/`stop` before and after it runs).
    var clients: [UInt64: RemoteSocket] = [:]
    var nextID: UInt64 = 1
    /// Clients whose ring toward the service may still hold datagrams after
    /// their turn ended: read again before sleeping (no doorbell will come).
    var revisit = Set<UInt64>()
    /// False while accepting is paused for want of descriptors.
    var listening = true
    let fromClients: OpaquePointer
    let toClients: OpaquePointer
    /// The executor's batch for `deliverInRegion` (executor thread only).
    let executorBatch: OpaquePointer
    /// The executor's batch for `RegionSender` (executor thread only).
    let executorSendBatch: OpaquePointer
    /// Clients whose doorbell the executor rings at the end of its turn, and
    /// that as work made once (executor thread only; see `ringDueDoorbells`).
    var doorbellsDue: [RemoteSocket] = []
    /// Of `doorbellsDue`, those left for the next turn (`ringDueDoorbells`), and
    /// the work that looks at them then (executor thread only).
    var doorbellsPostponed: [RemoteSocket] = []
    private(set) var ringDueDoorbellsWork: () -> Void = {}
    private(set) var ringPostponedDoorbellsWork: () -> Void = {}
    var thread: JoinableThread?

    static let batchCount: UInt32 = 16
    /// A slot holds the largest UDP payload (65 507 bytes over IPv4, 65 527 over IPv6) behind its header.
    static let slotSize = headerSize + 65536
    static let headerSize = MemoryLayout<tsp_datagram_header>.size
    static let listenTag: UInt64 = 0
    static let wakeupTag: UInt64 = 3
    static func tag(_ id: UInt64, data: Bool) -> UInt64 { id << 2 | (data ? 2 : 1) }

    /// Listens at `path` (mode 0660), making its directory if missing and
    /// replacing a stale socket nobody serves.
    /// - Throws: `ServiceError` explaining in one line why it cannot serve there.
    /// - Parameter counterSource: the counters `tapstack stats` reports before
    ///   the service's own; the stack's by default.
    /// - Parameter interfaceName: the device the stack runs on, which
    ///   clients name in SO_BINDTODEVICE and find by index in IP_PKTINFO.
    public init(host: NetworkHost, path: String, maximumSockets: Int = 1024, interfaceName: String? = nil,
                counterSource: (@Sendable () -> [(name: String, value: UInt64)])? = nil) throws(ServiceError) {
        self.host = host
        self.interfaceName = interfaceName.map { String($0.utf8.prefix(15))! } ?? ""
        self.interfaceIndex = interfaceName.map { Int32(bitPattern: if_nametoindex($0)) } ?? 0
        self.counterSource = counterSource ?? { host.counters.all.map { (name: $0.counter.name, value: $0.value) } }
        self.path = path
        self.maximumSockets = maximumSockets
        try Self.prepare(path)
        Self.raiseDescriptorLimit()
        listenFD = tsv_listen(path, 0o660)
        guard listenFD >= 0 else { throw .systemError(operation: "listen on \(path)", errno: errno) }
        epollFD = tsv_epoll_create()
        fromClients = tsv_batch_create(Self.batchCount, UInt32(Self.slotSize))!
        executorBatch = tsv_batch_create(Self.batchCount, UInt32(Self.slotSize))!
        executorSendBatch = tsv_batch_create(Self.batchCount, UInt32(Self.slotSize))!
        toClients = tsv_batch_create(Self.batchCount, UInt32(Self.slotSize))!
        _ = tsv_epoll_set(epollFD, 1, listenFD, UInt32(TSV_IN), Self.listenTag)
        _ = tsv_epoll_set(epollFD, 1, news.wakeup.fd, UInt32(TSV_IN), Self.wakeupTag)
        ringDueDoorbellsWork = { [weak self] in self?.ringDueDoorbells() }
        ringPostponedDoorbellsWork = { [weak self] in
            guard let self, !self.doorbellsDue.isEmpty else { return }
            self.host.executeAtEndOfTurn(self.ringDueDoorbellsWork)
        }
    }

    /// Each client socket holds two descriptors here: raise the soft limit
    /// (1024 by default) to the hard one so that `maximumSockets` can be reached.
    static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// Makes the directory and clears a stale socket file.
    static func prepare(_ path: String) throws(ServiceError) {
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            let directory = String(path[..<slash])
            if mkdir(directory, 0o755) != 0 && errno != EEXIST {
                throw .systemError(operation: "mkdir \(directory)", errno: errno)
            }
        }
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        guard status.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path: path) }
        var probe = tsc_socket()
        if tsc_open(&probe, path, AF_INET, 0) == 0 || errno != ECONNREFUSED {
            tsc_close(&probe)
            throw .inUse(path: path)
        }
        unlink(path)
    }

    /// Starts the service thread.
    public func start() {
        precondition(thread == nil)
        thread = JoinableThread(name: "tapstack-svc") { [self] in run() }
    }

    /// Stops the thread, releases every client's socket (their channels
    /// close, so blocked clients wake with an error) and removes the socket
    /// file. Calling it again does nothing.
    public func stop() {
        guard !stopped.exchange(true, ordering: .sequentiallyConsistent) else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        news.wakeup.forceSignal()
        thread?.join()
        thread = nil
        for client in Array(clients.values) { release(client) }
        close(listenFD)
        close(epollFD)
        unlink(path)
        tsv_batch_destroy(fromClients)
        tsv_batch_destroy(toClients)
        tsv_batch_destroy(executorBatch)  // no delivery runs now: every client was released
        tsv_batch_destroy(executorSendBatch)  // and every sender removed (one late poll finds no region)
    }

    /// Sockets open now (a snapshot, for tests and stats).
    public var openSockets: Int { openCount.load(ordering: .relaxed) }
    let openCount = Atomic<Int>(0)

    // MARK: The service thread

    func run() {
        let capacity = 64
        let tags = UnsafeMutablePointer<UInt64>.allocate(capacity: capacity)
        let events = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
        defer { tags.deallocate(); events.deallocate() }
        // Spinning before sleeping (as the driver and stack threads do) was
        // measured and did not pay here: the client's wake-ups dominate.
        var idle = false
        while !stopping.load(ordering: .relaxed) {
            // Sleep in epoll only when the last round found nothing; the
            // stack's news arrives through the wake-up's eventfd in the same set.
            var timeout: Int32 = 0
            if idle && news.wakeup.beginSleep(unless: {
                news.pending.load(ordering: .sequentiallyConsistent) || stopping.load(ordering: .relaxed)
            }) {
                timeout = -1
            }
            let count = Int(tsv_epoll_wait(epollFD, tags, events, Int32(capacity), timeout))
            if timeout == -1 { news.wakeup.endSleep() }
            var handled = 0
            for index in 0..<max(count, 0) {
                guard tags[index] != Self.wakeupTag else {
                    // A signal that landed after the last sleep ended: clear
                    // it, or epoll reports it on every round and this thread
                    // never sleeps again (it spun at a full core at 50 k/s).
                    news.wakeup.clear()
                    continue
                }
                handle(tag: tags[index], events: events[index])
                handled += 1
            }
            let hadNews = serveNews()
            let revisited = serveRevisits()
            idle = handled == 0 && !hadNews && !revisited
        }
    }

    func handle(tag: UInt64, events: UInt32) {
        if tag == Self.listenTag {
            acceptAll()
            return
        }
        guard let client = clients[tag >> 2] else { return }
        if tag & 3 == 1 {
            serveControl(client, events: events)
        } else {
            if events & UInt32(TSV_OUT) != 0 { flushToClient(client) }
            // Hung up while its datagrams wait for the link (the channel is
            // not being read then): the client is gone, release it now.
            if events & UInt32(TSV_HUP) != 0 && client.dataInterest & UInt32(TSV_IN) == 0 {
                release(client)
            } else if events & UInt32(TSV_IN | TSV_HUP) != 0, clients[client.id] != nil {
                readFromClient(client)
            }
        }
    }

    /// Reads the rings of clients whose turn ended before their ring was empty.
    func serveRevisits() -> Bool {
        guard !revisit.isEmpty else { return false }
        let ids = revisit
        revisit.removeAll(keepingCapacity: true)
        for id in ids { if let client = clients[id] { readFromClient(client) } }
        return true
    }

    /// Lets every socket the stack flagged move its datagrams; true if any was flagged.
    func serveNews() -> Bool {
        guard news.pending.exchange(false, ordering: .sequentiallyConsistent) else { return false }
        let ids = news.ids.withLock { ids in
            defer { ids.removeAll(keepingCapacity: true) }
            return ids
        }
        for id in ids {
            guard let client = clients[id] else { continue }
            client.flag.lower()
            let failed = client.delivery.withLock {
                if !client.waitingForStack.isEmpty { retryToStack(client) }
                return client.regionFailed
            }
            if failed {
                releaseBrokenRegion(client)
                continue
            }
            if clients[id] != nil { flushToClient(client) }
        }
        return true
    }
}

/// News from the stack thread for the service thread: which sockets have
/// something, and the wake-up for a sleeping service thread.
final class News: Sendable {
    let ids = Mutex<[UInt64]>([])
    let pending = Atomic<Bool>(false)
    let wakeup = Wakeup()

    func post(_ id: UInt64) {
        ids.withLock { $0.append(id) }
        pending.store(true, ordering: .sequentiallyConsistent)
        wakeup.signal()
    }
}
