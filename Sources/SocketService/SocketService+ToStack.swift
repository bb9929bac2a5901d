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

    /// Reads the client's datagrams and sends them, until its channel is
    /// empty, the link is full (then waits for `.writable`), or it hung up.
    func readFromClient(_ client: RemoteSocket) {
        guard let socket = client.socket, client.waitingForStack.isEmpty else { return }
        for _ in 0..<4 {  // then let other clients have a turn
            let count = Int(tsv_batch_receive(client.data, fromClients, Self.batchCount))
            if count < 0 {
                if errno != EAGAIN { release(client) }
                return
            }
            var next = 0
            var hungUp = false
            var errors: [SocketError] = []
            let batch = fromClients
            let counters = self.counters
            // Yields each well-formed datagram of the batch in order.
            func nextDatagram() -> (Int, UnsafeRawBufferPointer, SocketAddress?, DatagramSendOptions)? {
                while next < count {
                    let index = next
                    next += 1
                    let length = Int(tsv_batch_length(batch, UInt32(index)))
                    if length == 0 {  // end of file: the client closed its descriptor
                        hungUp = true
                        next = count
                        return nil
                    }
                    guard let datagram = Self.datagram(in: batch, at: index, length: length) else {
                        counters.badDatagrams.add(1, ordering: .relaxed)
                        continue
                    }
                    return (index, datagram.payload, datagram.destination, datagram.options)
                }
                return nil
            }
            var current = 0
            let (taken, blocked) = socket.send(batchWithOptions: {
                guard let (index, payload, destination, options) = nextDatagram() else { return nil }
                current = index
                return (payload, destination, options)
            }, failed: { errors.append($0) })
            counters.datagramsSent.add(UInt64(taken - errors.count), ordering: .relaxed)
            counters.sendErrors.add(UInt64(errors.count), ordering: .relaxed)
            for error in errors { queueError(error, for: client) }
            if blocked {
                // The link is full: keep this datagram and the rest of the batch.
                for index in current..<count {
                    let length = Int(tsv_batch_length(fromClients, UInt32(index)))
                    guard length > 0, let datagram = Self.datagram(in: fromClients, at: index, length: length) else { continue }
                    client.waitingForStack.append((datagram.destination, datagram.options, Array(datagram.payload)))
                }
                setDataInterest(client, client.dataInterest & ~UInt32(TSV_IN))
                return
            }
            if hungUp {
                release(client)
                return
            }
            if count < Int(Self.batchCount) { return }
        }
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
        guard let socket = client.socket else { return }
        while let first = client.waitingForStack.first {
            let sent = first.payload.withUnsafeBytes { send($0, to: first.destination, options: first.options, on: socket, for: client) }
            if !sent { return }
            client.waitingForStack.removeFirst()
        }
        setDataInterest(client, client.dataInterest | UInt32(TSV_IN))
        readFromClient(client)
    }
}
