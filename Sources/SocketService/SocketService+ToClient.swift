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

// The stack-to-client pump: a stack socket's datagrams and errors written
// to its client's data channel, with backpressure from the channel.
extension SocketService {
    // MARK: Stack to client

    /// An asynchronous error for the client's next receive. Like a kernel
    /// socket's pending error, at most one waits: a client that does not
    /// read cannot make errors pile up.
    func queueError(_ error: SocketError, for client: RemoteSocket) {
        client.delivery.withLock {
            if appendError(error, for: client) { flushToClient(client) }
        }
    }

    /// Puts an error message behind what waits for the client (at most one waits); true if it did.
    func appendError(_ error: SocketError, for client: RemoteSocket) -> Bool {
        let errorKind = UInt8(TSP_ERROR.rawValue)
        let kindOffset = MemoryLayout<tsp_datagram_header>.offset(of: \tsp_datagram_header.kind)!
        if client.waitingForClient.contains(where: { $0.count == Self.headerSize && $0[kindOffset] == errorKind }) { return false }
        var header = tsp_datagram_header()
        header.magic = TSP_MAGIC
        header.kind = UInt8(TSP_ERROR.rawValue)
        header.error = UInt8(truncatingIfNeeded: error.errno)
        client.waitingForClient.append(withUnsafeBytes(of: header) { Array($0) })
        counters.errorsDelivered.add(1, ordering: .relaxed)
        return true
    }

    /// Counts and forgets the datagrams waiting for a client whose channel failed.
    func dropWaitingForClient(_ client: RemoteSocket) {
        client.delivery.withLock { dropWaitingForClientLocked(client) }
    }

    private func dropWaitingForClientLocked(_ client: RemoteSocket) {
        let errorKind = UInt8(TSP_ERROR.rawValue)
        let kindOffset = MemoryLayout<tsp_datagram_header>.offset(of: \tsp_datagram_header.kind)!
        let datagrams = client.waitingForClient.count { !($0.count == Self.headerSize && $0[kindOffset] == errorKind) }
        counters.droppedClientGone.add(UInt64(datagrams), ordering: .relaxed)
        client.waitingForClient.removeAll()
    }

    /// Passes the stack socket's datagrams (and errors) to the client's
    /// channel until the socket is empty or the channel full (then waits
    /// for the channel to drain).
    func flushToClient(_ client: RemoteSocket) {
        client.delivery.withLock {
            flushToClientLocked(client)
            client.updateDeliveryHint()
        }
    }

    private func flushToClientLocked(_ client: RemoteSocket) {
        guard let socket = client.socket else { return }
        if client.doorbellOwed {
            if tsv_doorbell(client.data) == 0 || errno != EAGAIN {
                client.doorbellOwed = false  // sent, or the client is gone
            } else {
                setDataInterest(client, client.dataInterest | UInt32(TSV_OUT))
                return
            }
        }
        while let first = client.waitingForClient.first {
            let n = first.withUnsafeBytes { Glibc.send(client.data, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EAGAIN {
                    setDataInterest(client, client.dataInterest | UInt32(TSV_OUT))
                    return
                }
                // EPIPE etc.: the client cannot take what waits for it.
                dropWaitingForClient(client)
                break
            }
            client.waitingForClient.removeFirst()
            if let region = client.region { tsv_region_note_channel(region) }
        }
        setDataInterest(client, client.dataInterest & ~UInt32(TSV_OUT))
        // Back to the ring once the client has read everything on the channel.
        if client.receiveFallback && tsv_unread(client.data) == 0 { client.receiveFallback = false }
        var region = client.receivesInRegion && !client.receiveFallback ? client.region : nil
        let batch = toClients
        // Toward a connected socket datagrams go bare (the source is the
        // peer), so that a program reading with raw system calls gets just
        // the payload; one that begins with TSP_MAGIC stays framed.
        // The shim frames what comes through the region itself.
        let bare = !client.wantsInfo && !client.receivesInRegion && socket.remoteAddress != nil
        // CLOCK_REALTIME minus CLOCK_MONOTONIC, once per flush: turns arrival instants into SO_TIMESTAMP's time.
        let wallClockOffset = wallClockNanoseconds(at: .zero)
        while true {
            let (count, failed) = Self.receiveFramed(from: socket, into: batch, bare: bare, wallClockOffset: wallClockOffset)
            if count > 0 {
                var sent = 0
                if let ring = region {
                    let (put, rang) = putInRegion(ring, toClients, count: count)
                    if rang { ringDoorbell(ring, for: client) }
                    if put < 0 {
                        counters.droppedClientGone.add(UInt64(count), ordering: .relaxed)  // lost with the socket
                        return releaseBrokenRegion(client)
                    }
                    sent = put
                    if put < count {
                        // Full: the channel, until the client has read it all.
                        client.receiveFallback = true
                        region = nil
                        counters.regionFallbacks.add(UInt64(Int(count) - put), ordering: .relaxed)
                    }
                }
                if sent < count {
                    let onChannel = max(0, Int(tsv_batch_send(client.data, toClients, UInt32(sent), count - UInt32(sent))))
                    sent += onChannel
                    if onChannel > 0, let region = client.region { tsv_region_note_channel(region) }
                }
                counters.datagramsReceived.add(UInt64(sent), ordering: .relaxed)
                if sent < count {
                    if errno != EAGAIN {
                        // The client is gone or no longer reads (its hang-up,
                        // if any, follows): what it did not take is lost.
                        // Keep draining: the stack socket's readiness fires
                        // again only once it is empty.
                        counters.droppedClientGone.add(UInt64(count) - UInt64(sent), ordering: .relaxed)
                        if count < Self.batchCount { return }
                        continue
                    }
                    keepForChannel(toClients, UInt32(sent)..<count, for: client)
                    if let failed { queueError(failed, for: client) }
                    setDataInterest(client, client.dataInterest | UInt32(TSV_OUT))
                    return
                }
            }
            if let failed {
                queueError(failed, for: client)
                return
            }
            if count < Self.batchCount { return }
        }
    }

    /// Puts slots `0..<count` of `batch` in the client's ring. Returns how
    /// many went (-1: the ring is broken) and whether the ring had been
    /// empty, so the client needs a doorbell. Call holding `delivery`.
    func putInRegion(_ region: OpaquePointer, _ batch: OpaquePointer, count: UInt32) -> (put: Int, rang: Bool) {
        var rang: Int32 = 0
        let put = Int(tsv_region_put(region, batch, 0, count, &rang))
        return (put, rang != 0)
    }

    /// Counts a doorbell in the region and sends it; owed when the channel
    /// had no room. Call holding `delivery`.
    private func ringDoorbell(_ region: OpaquePointer, for client: RemoteSocket) {
        counters.doorbellsRung.add(1, ordering: .relaxed)
        if tsv_region_ring(region, client.data) != 0 {
            client.doorbellOwed = true
            counters.doorbellsDeferred.add(1, ordering: .relaxed)
        }
    }

    /// On the executor: the client's doorbell is rung at the end of the turn
    /// (`ringDueDoorbells`), once however many batches the turn put there.
    /// Call holding `delivery`.
    private func ringAtEndOfTurn(_ client: RemoteSocket) {
        guard !client.doorbellDue else { return }
        client.doorbellDue = true
        if doorbellsDue.isEmpty { host.executeAtEndOfTurn(ringDueDoorbellsWork) }
        doorbellsDue.append(client)
    }

    /// At the end of the executor's turn: one doorbell per client whose ring
    /// the turn found empty, for all the datagrams the turn put there; none
    /// when the client (awake) took them all meanwhile. Ringing last, as the
    /// executor is about to write and sleep, the client's wake-up does not
    /// preempt the rest of the turn, and a turn's datagrams cost one.
    ///
    /// A client that polls its ring and whose answer the executor awaits
    /// (`awaitAnswer`) takes them within a look or two, but not always
    /// before the turn ends (half of a ping-pong's round trips, measured):
    /// its doorbell is left to the next turn, and so on while the wait
    /// lasts and its hint says it polls. A receiver about to sleep lowers
    /// that hint first, and the client's wait ends at its poll time (at
    /// most `longestAnswerWaitMicroseconds` after the delivery), so the
    /// doorbell of datagrams still there then is rung. A doorbell spared
    /// so spares the executor a system call and the client two, on the
    /// round trip's path.
    func ringDueDoorbells() {
        for client in doorbellsDue {
            let (owed, postponed): (Bool, Bool) = client.delivery.withLock {
                guard let region = client.region, tsv_region_to_client_holds(region) != 0 else {
                    client.doorbellDue = false
                    return (false, false)
                }
                if takesAtOnce(client, region: region) { return (false, true) }  // still due
                client.doorbellDue = false
                ringDoorbell(region, for: client)
                guard client.doorbellOwed else { return (false, false) }
                client.updateDeliveryHint()  // the service thread sends it once the channel has room
                return (true, false)
            }
            if postponed { doorbellsPostponed.append(client) }
            if owed && client.flag.raise() { news.post(client.id) }
        }
        doorbellsDue.removeAll(keepingCapacity: true)
        guard !doorbellsPostponed.isEmpty else { return }
        swap(&doorbellsDue, &doorbellsPostponed)
        // At the end of the next turn (this turn's end-of-turn work runs until none is left).
        host.execute(ringPostponedDoorbellsWork)
    }

    /// Whether the client polls its ring (its hint) while the executor
    /// awaits its answer: until that client's own deadline, whatever other
    /// clients' waits keep the executor awake.
    private func takesAtOnce(_ client: RemoteSocket, region: OpaquePointer) -> Bool {
        guard client.answerAwaited, monotonicNanoseconds() < client.answerDeadline else { return false }
        var microseconds: UInt32 = 0
        return tsv_region_client_polling(region, Self.longestAnswerWaitMicroseconds, &microseconds) != 0
    }

    /// Copies slots `range` of `batch` behind what waits for the client's
    /// channel. Call holding `delivery`.
    func keepForChannel(_ batch: OpaquePointer, _ range: Range<UInt32>, for client: RemoteSocket) {
        for index in range {
            let slot = UnsafeRawPointer(tsv_batch_slot(batch, index)!)
            client.waitingForClient.append(Array(UnsafeRawBufferPointer(start: slot, count: Int(tsv_batch_length(batch, index)))))
        }
    }

    /// Takes up to a batch of the socket's datagrams into `batch`'s slots,
    /// each framed with its facts (or bare: see `flushToClient`); returns how
    /// many, and the error the socket reported instead of more, if any.
    static func receiveFramed(from socket: UDPSocket, into batch: OpaquePointer, bare: Bool,
                              wallClockOffset: UInt64) -> (count: UInt32, failed: SocketError?) {
        let headerSize = Self.headerSize, slotSize = Self.slotSize
        var count: UInt32 = 0
        var failed: SocketError?
        do throws(SocketError) {
            count = UInt32(try socket.receive(upTo: Int(Self.batchCount), into: { index in
                UnsafeMutableRawBufferPointer(start: tsv_batch_slot(batch, UInt32(index))! + headerSize, count: slotSize - headerSize)
            }, receivedInfo: { index, info in
                let slot = tsv_batch_slot(batch, UInt32(index))!
                let kept = min(info.length, slotSize - headerSize)
                if bare && (kept < 4 || (slot + headerSize).loadUnaligned(as: UInt32.self) != TSP_MAGIC) {
                    slot.copyMemory(from: slot + headerSize, byteCount: kept)
                    tsv_batch_set_length(batch, UInt32(index), UInt32(kept))
                    return
                }
                var header = tsp_datagram_header()
                header.magic = TSP_MAGIC
                header.address = info.source6.map(tsp_address.init) ?? tsp_address(info.source)
                header.port = info.sourcePort
                header.local_address = info.destination6.map(tsp_address.init) ?? tsp_address(info.destination)
                header.ttl = info.timeToLive
                header.tos = info.typeOfService
                header.timestamp_ns = wallClockOffset &+ info.receivedAt.nanoseconds
                slot.storeBytes(of: header, as: tsp_datagram_header.self)
                tsv_batch_set_length(batch, UInt32(index), UInt32(headerSize + kept))
            }))
        } catch {
            if error != .wouldBlock && error != .closed { failed = error }
        }
        return (count, failed)
    }

    // MARK: On the executor

    /// Runs on the stack's executor (queued by the socket's readiness
    /// callback): puts the socket's datagrams in the client's region without
    /// a hop to the service thread. Anything else (a full ring, an error, a
    /// client on the channel) is left to the service thread.
    func deliverInRegion(_ client: RemoteSocket) {
        client.deliveryScheduled.store(false, ordering: .sequentiallyConsistent)
        let leftForService: Bool = client.delivery.withLock {
            defer { client.updateDeliveryHint() }
            guard let socket = client.socket, let region = client.region, client.receivesInRegion,
                  !client.receiveFallback, client.waitingForClient.isEmpty, !client.doorbellOwed else { return true }
            let batch = executorBatch
            let wallClockOffset = wallClockNanoseconds(at: .zero)
            while true {
                let (count, failed) = Self.receiveFramed(from: socket, into: batch, bare: false, wallClockOffset: wallClockOffset)
                if count > 0 {
                    let (put, rang) = putInRegion(region, batch, count: count)
                    if rang { ringAtEndOfTurn(client) }
                    if put > 0 {
                        tsv_region_note_executor_cpu(region)  // a receive there sleeps rather than poll
                        awaitAnswer(from: client, region: region)
                    }
                    counters.datagramsReceived.add(UInt64(max(put, 0)), ordering: .relaxed)
                    counters.regionDirect.add(UInt64(max(put, 0)), ordering: .relaxed)
                    if put < Int(count) {
                        // Full (or broken: the service thread finds out too):
                        // the rest goes on the channel, from the service thread.
                        keepForChannel(batch, UInt32(max(put, 0))..<count, for: client)
                        client.receiveFallback = true
                        counters.regionFallbacks.add(UInt64(Int(count) - max(put, 0)), ordering: .relaxed)
                        if let failed { _ = appendError(failed, for: client) }
                        return true
                    }
                }
                if let failed {
                    _ = appendError(failed, for: client)
                    return true
                }
                if count < Self.batchCount { return false }
            }
        }
        if leftForService && client.flag.raise() { news.post(client.id) }
    }

    /// The longest the executor waits for a busy-polling client's answer
    /// (its busy-poll time, at most this).
    static let longestAnswerWaitMicroseconds: UInt32 = 200
    /// Waits in a row a client may leave unanswered before it is no longer waited for.
    static let unansweredWaitsTolerated = 2

    /// On the executor, having just put datagrams in the client's ring: a
    /// client whose receive busy-polls (on another CPU) has them at once
    /// and, if it converses, answers at once, so the executor waits for the
    /// answer (as long as the client polls, at most
    /// `longestAnswerWaitMicroseconds`) instead of sleeping and being woken
    /// for it. A client that leaves `unansweredWaitsTolerated` waits in a
    /// row unanswered (it only receives) is not waited for until it sends
    /// again.
    private func awaitAnswer(from client: RemoteSocket, region: OpaquePointer) {
        if client.answerAwaited {
            // Unanswered since the last delivery: a wait still on goes on; one over went unanswered.
            if host.isAwaitingAnswer { return }
            client.answerAwaited = false
            client.unansweredWaits += 1
        }
        guard let sender = client.sender, client.unansweredWaits < Self.unansweredWaitsTolerated else { return }
        var microseconds: UInt32 = 0
        let cpu = tsv_region_client_polling(region, Self.longestAnswerWaitMicroseconds, &microseconds)
        guard cpu != 0, microseconds > 0 else { return }
        let deadline = monotonicNanoseconds() &+ UInt64(microseconds) &* 1000
        client.answerAwaited = host.awaitAnswer(from: sender, until: deadline, producerCPU: Int32(bitPattern: cpu &- 1))
        guard client.answerAwaited else { return }
        client.answerDeadline = deadline
        counters.answerWaits.add(1, ordering: .relaxed)
        // The executor looks at the ring on every turn meanwhile: the client need not ring.
        tsv_region_disarm(region)
    }

    /// On the executor: the client sent from its ring, answering a wait if there was one.
    func clientAnswered(_ client: RemoteSocket) {
        client.unansweredWaits = 0
        guard client.answerAwaited else { return }
        client.answerAwaited = false
        if host.answerArrived() { counters.answersInTime.add(1, ordering: .relaxed) }
    }
}
