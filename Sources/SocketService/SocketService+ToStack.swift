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

// The client-to-stack pump: datagrams read from a client's data channel
// and sent through its stack socket, with backpressure from the link.
extension SocketService {
    // MARK: Client to stack

    /// Reads the client's datagrams and sends them, until its ring and
    /// channel are empty, the link is full (then waits for `.writable`), or
    /// it hung up. The ring comes first: a datagram on the channel was sent
    /// after everything in the ring (see tapstack_channel_ring.c). Under
    /// `delivery`: the executor takes from the ring too (`RegionSender`).
    func readFromClient(_ client: RemoteSocket) {
        client.delivery.withLock { readFromClientLocked(client) }
    }

    private func readFromClientLocked(_ client: RemoteSocket) {
        guard let socket = client.socket, client.waitingForStack.isEmpty else { return }
        for _ in 0..<4 {  // then let other clients have a turn
            var count = 0
            var fromRing = false
            if let region = client.region {
                count = Int(tsv_region_take(region, fromClients, Self.batchCount))
                if count < 0 { return releaseBrokenRegion(client) }
                fromRing = count > 0
            }
            if !fromRing {
                count = Int(tsv_batch_receive(client.data, fromClients, Self.batchCount))
                if count < 0 {
                    if errno != EAGAIN { release(client) }
                    return armRegion(client)
                }
                if let region = client.region, let position = Self.ringPosition(stampedIn: fromClients, count: count),
                   tsv_region_precedes(region, position) != 0 {
                    // Sent on the channel when the ring was full: what the ring held then goes first.
                    return sendRingBeforeChannel(client, region: region, upTo: position, channelCount: count)
                }
            }
            let (blocked, hungUp, errors) = sendBatch(fromClients, count: count, from: client, on: socket)
            for error in errors { queueError(error, for: client) }
            if blocked {
                setDataInterest(client, client.dataInterest & ~UInt32(TSV_IN))
                return
            }
            if hungUp {
                release(client)
                return
            }
            // A short read of the ring: the channel may hold a doorbell or
            // fallbacks; a short read of the channel: done, unless a
            // doorbell in it says the ring filled meanwhile.
            if count < Int(Self.batchCount) && !fromRing {
                guard let region = client.region, tsv_region_has_datagram(region) != 0 else { return armRegion(client) }
            }
        }
        if let region = client.region, tsv_region_has_datagram(region) != 0 { revisit.insert(client.id) }
    }

    /// Done with the client's ring for now: asks for a doorbell for its next
    /// datagram (the executor lowers the request while it looks itself),
    /// and comes back if one arrived meanwhile.
    private func armRegion(_ client: RemoteSocket) {
        if let region = client.region, client.socket != nil, tsv_region_arm(region) != 0 { revisit.insert(client.id) }
    }

    /// Sends the `count` datagrams in `batch` (from the ring or the channel)
    /// through the client's stack socket, skipping doorbells and counting
    /// malformed ones. On a full link the rest waits in `waitingForStack`
    /// (blocked); an empty message is the client's end of file (hung up).
    /// The errors the stack reported are returned for the caller to pass on.
    /// Call holding `delivery`.
    func sendBatch(_ batch: OpaquePointer, count: Int, from client: RemoteSocket, on socket: UDPSocket)
        -> (blocked: Bool, hungUp: Bool, errors: [SocketError]) {
        var next = 0
        var hungUp = false
        var errors: [SocketError] = []
        let counters = self.counters
        var current = 0
        // Yields each well-formed datagram of the batch in order. (In the
        // closure itself: through a nested function its captured state was
        // boxed on the heap, an allocation per batch.)
        let (taken, blocked) = socket.send(batchWithOptions: {
            while next < count {
                let index = next
                next += 1
                let length = Int(tsv_batch_length(batch, UInt32(index)))
                if length == 0 {  // end of file: the client closed its descriptor
                    hungUp = true
                    next = count
                    return nil
                }
                if Self.isDoorbell(batch, at: index, length: length) { continue }
                guard let datagram = Self.datagram(in: batch, at: index, length: length) else {
                    counters.badDatagrams.add(1, ordering: .relaxed)
                    continue
                }
                current = index
                return (datagram.payload, datagram.destination, datagram.options)
            }
            return nil
        }, failed: { errors.append($0) })
        counters.datagramsSent.add(UInt64(taken - errors.count), ordering: .relaxed)
        counters.sendErrors.add(UInt64(errors.count), ordering: .relaxed)
        if blocked {
            // The link is full: keep this datagram and the rest of the batch.
            for index in current..<count {
                let length = Int(tsv_batch_length(batch, UInt32(index)))
                guard length > 0, !Self.isDoorbell(batch, at: index, length: length),
                      let datagram = Self.datagram(in: batch, at: index, length: length) else { continue }
                client.waitingForStack.append((datagram.destination, datagram.options, Array(datagram.payload)))
            }
        }
        return (blocked, hungUp, errors)
    }

    /// A doorbell (TSP_DOORBELL): says only that the ring has datagrams.
    static func isDoorbell(_ batch: OpaquePointer, at index: Int, length: Int) -> Bool {
        guard length == headerSize else { return false }
        let slot = UnsafeRawPointer(tsv_batch_slot(batch, UInt32(index))!)
        return slot.loadUnaligned(as: UInt32.self) == TSP_MAGIC
            && slot.loadUnaligned(fromByteOffset: MemoryLayout<tsp_datagram_header>.offset(of: \tsp_datagram_header.kind)!, as: UInt8.self)
            == UInt8(TSP_DOORBELL.rawValue)
    }

    /// The latest ring position stamped on a datagram of the batch that the
    /// client sent on the channel because its ring was full (TSP_SEND_AFTER_RING).
    static func ringPosition(stampedIn batch: OpaquePointer, count: Int) -> UInt32? {
        var position: UInt32?
        for index in 0..<count where Int(tsv_batch_length(batch, UInt32(index))) >= headerSize {
            let header = UnsafeRawPointer(tsv_batch_slot(batch, UInt32(index))!).loadUnaligned(as: tsp_datagram_header.self)
            guard header.magic == TSP_MAGIC, header.kind == UInt8(TSP_DATAGRAM.rawValue),
                  header.flags & UInt8(TSP_SEND_AFTER_RING.rawValue) != 0 else { continue }
            position = UInt32(truncatingIfNeeded: header.timestamp_ns)
        }
        return position
    }

    /// Queues what the ring held up to `position`, then the channel's
    /// datagrams just read, and sends them in that order (rare: only when
    /// the client's ring was full).
    func sendRingBeforeChannel(_ client: RemoteSocket, region: OpaquePointer, upTo position: UInt32, channelCount: Int) {
        while tsv_region_precedes(region, position) != 0 {
            let taken = tsv_region_take(region, toClients, 1)
            if taken < 0 { return releaseBrokenRegion(client) }
            if taken == 0 { break }
            let length = Int(tsv_batch_length(toClients, 0))
            if let datagram = Self.datagram(in: toClients, at: 0, length: length) {
                client.waitingForStack.append((datagram.destination, datagram.options, Array(datagram.payload)))
            } else {
                counters.badDatagrams.add(1, ordering: .relaxed)
            }
        }
        var hungUp = false
        for index in 0..<channelCount {
            let length = Int(tsv_batch_length(fromClients, UInt32(index)))
            if length == 0 { hungUp = true; break }
            guard !Self.isDoorbell(fromClients, at: index, length: length) else { continue }
            guard let datagram = Self.datagram(in: fromClients, at: index, length: length) else {
                counters.badDatagrams.add(1, ordering: .relaxed)
                continue
            }
            client.waitingForStack.append((datagram.destination, datagram.options, Array(datagram.payload)))
        }
        setDataInterest(client, client.dataInterest & ~UInt32(TSV_IN))
        if hungUp {
            // Sent and closed: hand over what can go now; the rest is counted with the socket.
            retryToStack(client)
            if clients[client.id] != nil { release(client) }
            return
        }
        retryToStack(client)
    }

    /// The datagram in slot `index` of `batch`, or nil when malformed.
    static func datagram(in batch: OpaquePointer, at index: Int, length: Int)
        -> (payload: UnsafeRawBufferPointer, destination: SocketAddress?, options: DatagramSendOptions)? {
        guard tsv_batch_truncated(batch, UInt32(index)) == 0 else { return nil }
        let slot = UnsafeRawPointer(tsv_batch_slot(batch, UInt32(index))!)
        // No magic: a bare payload for the connected peer, written by a raw
        // system call the shim did not see (libuv's sendmmsg).
        guard length >= headerSize, slot.loadUnaligned(as: UInt32.self) == TSP_MAGIC else {
            return (UnsafeRawBufferPointer(start: slot, count: length), nil, DatagramSendOptions())
        }
        let header = slot.loadUnaligned(as: tsp_datagram_header.self)
        guard header.kind == UInt8(TSP_DATAGRAM.rawValue) else { return nil }
        var address = header.address, localAddress = header.local_address
        let destination = tsp_address_is_unspecified(&address) != 0 && header.port == 0 ? nil : address.socketAddress(port: header.port)
        var options = DatagramSendOptions()
        if tsp_address_is_unspecified(&localAddress) == 0 {
            let source = localAddress.ipv6Address
            if let v4 = source.mappedIPv4 { options.source = v4 } else { options.source6 = source }
        }
        if header.flags & UInt8(TSP_SEND_TTL.rawValue) != 0 { options.timeToLive = header.ttl }
        if header.flags & UInt8(TSP_SEND_TOS.rawValue) != 0 { options.typeOfService = header.tos }
        return (UnsafeRawBufferPointer(start: slot + headerSize, count: length - headerSize), destination, options)
    }

    /// Sends one datagram; false when the link is full (nothing sent).
    /// Other errors are counted and passed to the client.
    func send(_ payload: UnsafeRawBufferPointer, to destination: SocketAddress?, options: DatagramSendOptions,
                      on socket: UDPSocket, for client: RemoteSocket) -> Bool {
        do throws(SocketError) {
            try socket.send(payload, to: destination, options: options)
            counters.datagramsSent.add(1, ordering: .relaxed)
        } catch .wouldBlock {
            return false
        } catch {
            counters.sendErrors.add(1, ordering: .relaxed)
            queueError(error, for: client)
        }
        return true
    }

    /// Sends what waited for the link, then reads the channel again.
    func retryToStack(_ client: RemoteSocket) {
        client.delivery.withLock { retryToStackLocked(client) }
    }

    private func retryToStackLocked(_ client: RemoteSocket) {
        guard let socket = client.socket else { return }
        while let first = client.waitingForStack.first {
            let sent = first.payload.withUnsafeBytes { send($0, to: first.destination, options: first.options, on: socket, for: client) }
            if !sent {
                // (The executor may have queued these: the channel waits too.)
                setDataInterest(client, client.dataInterest & ~UInt32(TSV_IN))
                return
            }
            client.waitingForStack.removeFirst()
        }
        setDataInterest(client, client.dataInterest | UInt32(TSV_IN))
        readFromClient(client)
    }
}
