import CTapstackChannel
import Glibc
import Host
import Sockets

/// A client's datagrams taken from its region by the stack's executor, on
/// every turn from the client's doorbell until the executor sleeps, so a
/// busy flow needs neither a doorbell per datagram nor the service thread:
/// the executor enters the core itself.
///
/// Before the executor sleeps, the sender asks the client for a doorbell
/// (`tsv_region_arm`): the client writes the sender's eventfd, which the
/// link watches, so the executor wakes without a thread in between. (A
/// client without it puts the doorbell on the channel: the service thread
/// takes the datagrams then, and its send wakes the executor.) Whatever is
/// not simple (a full link, an error, a broken ring) is left to the
/// service thread.
final class RegionSender: ExecutorSource, @unchecked Sendable {
    private unowned let service: SocketService
    private let client: RemoteSocket
    /// The client's region; unmapped when the sender goes, so the executor
    /// can look at its indices without the client's lock. `client.region`
    /// says whether it is still in use.
    let region: OpaquePointer
    /// The client's doorbell when the link watches it (-1: the channel's doorbell serves).
    let wakeDescriptor: Int32

    init(service: SocketService, client: RemoteSocket, region: OpaquePointer) {
        self.service = service
        self.client = client
        self.region = region
        wakeDescriptor = service.host.watchesWakeDescriptors ? tsv_wake_create() : -1
    }

    /// Only after the executor stopped watching and looking: its copy of
    /// the sources holds the last reference.
    deinit {
        if wakeDescriptor >= 0 { close(wakeDescriptor) }
        tsv_region_destroy(region)
    }

    // An idle client costs a turn two loads (and the sleep a third), no lock.

    func poll() -> Bool {
        guard tsv_region_peek(region) != 0 else { return false }
        // The service thread has it: it arms the region when it is done.
        guard client.delivery.tryLock() else { return false }
        defer { client.delivery.unlock() }
        guard client.region != nil, let socket = client.socket, client.waitingForStack.isEmpty else { return false }
        tsv_region_disarm(region)
        return service.sendFromRegion(client, region: region, socket: socket)
    }

    func prepareToSleep() -> Bool {
        guard tsv_region_arm_quick(region) != 0 else { return false }
        // Something waits: wait for the service thread if it holds the
        // client (flushing to it, say: it need not look at this ring), then
        // say whether the executor can take it. (No deadlock: the executor
        // holds no lock here, and the service thread takes only the stack's.)
        return client.delivery.withLock {
            client.region != nil && client.socket != nil && client.waitingForStack.isEmpty && tsv_region_has_datagram(region) != 0
        }
    }
}

extension SocketService {
    /// On the executor, holding `delivery`: sends what the client's ring
    /// holds, a few batches at most per turn. True if it took anything.
    func sendFromRegion(_ client: RemoteSocket, region: OpaquePointer, socket: UDPSocket) -> Bool {
        let batch = executorSendBatch
        var took = false
        for _ in 0..<4 {
            let count = Int(tsv_region_take(region, batch, Self.batchCount))
            guard count > 0 else {
                // A broken ring: the service thread finds it broken too and releases the socket.
                if count < 0 {
                    client.regionFailed = true
                    handOver(client)
                }
                return took
            }
            if !took { clientAnswered(client) }
            took = true
            counters.regionSendsDirect.add(UInt64(count), ordering: .relaxed)
            let (blocked, _, errors) = sendBatch(batch, count: count, from: client, on: socket)
            for error in errors { _ = appendError(error, for: client) }
            if blocked || !errors.isEmpty {
                handOver(client)
                return took
            }
            if count < Int(Self.batchCount) { return took }
        }
        return took
    }

    /// Leaves the client to the service thread (it retries what waits for
    /// the link, passes errors on, or releases a broken region).
    private func handOver(_ client: RemoteSocket) {
        client.updateDeliveryHint()
        if client.flag.raise() { news.post(client.id) }
    }
}
