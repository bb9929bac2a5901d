import Glibc
import Link
import SocketAPI
import Synchronization
import Testing
import TestSupport
@testable import Host
@testable import Sockets
@testable import Stack
@testable import Wire

/// Plays the wire for a memory link: every UDP frame the stack sends to the
/// peer comes back as if the peer had sent it (MACs and IPs swapped, ports
/// kept, which keeps both checksums valid; a checksum the stack left partial
/// comes back partial and vouched for, as the TAP link hands over the kernel's).
final class Reflector: Sendable {
    let link: MemoryLink
    private let stopping = Atomic<Bool>(false)
    let reflected = Atomic<Int>(0)
    private let thread: Mutex<JoinableThread?> = Mutex(nil)

    init(link: MemoryLink) { self.link = link }

    func start() {
        let t = JoinableThread(name: "reflector") { [self] in
            while !stopping.load(ordering: .relaxed) {
                guard var (frame, checksum) = link.nextTransmittedFrame(timeoutMilliseconds: 20) else { continue }
                guard frame.count >= 34, frame[12] == 0x08, frame[13] == 0x00, frame[23] == 17 else { continue }
                // A checksum left to the link comes back partial and vouched
                // for, as the TAP link hands over the kernel's.
                if case .partial(let start, let offset) = checksum { checksum = .verified(start: start, offset: offset) }
                for i in 0..<6 { frame.swapAt(i, i + 6) }
                for i in 0..<4 { frame.swapAt(26 + i, 30 + i) }
                while !link.inject(frame, checksum: checksum) {
                    if stopping.load(ordering: .relaxed) { return }
                    sched_yield()
                }
                reflected.add(1, ordering: .relaxed)
            }
        }
        thread.withLock { $0 = t }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        thread.withLock { $0 }?.join()
    }
}

/// Counts what a receiver thread saw.
final class ReceiverTally: @unchecked Sendable {
    // Written by its receiver thread only; read after join.
    var received = 0
    var outOfOrder = 0
    var corrupt = 0
}

@Suite(.serialized) struct ConcurrencyTests {
    /// Several sockets, each with its own sender and receiver thread, all
    /// through the same stack and rings at once: every datagram is either
    /// received intact and in order, or counted as dropped; with checksums
    /// computed by the stack, and left to the link.
    @Test(arguments: [false, true])
    func concurrentSendersAndReceiversAccountForEveryDatagram(completesChecksums: Bool) throws {
        let pairs = 4
        let perPair = 3000
        let live = LiveHost(ringCapacity: 256, completesChecksums: completesChecksums)
        live.learnPeer()
        let reflector = Reflector(link: live.link)
        reflector.start()
        defer { reflector.stop() }

        var receivers: [UDPSocket] = []
        var senders: [UDPSocket] = []
        for i in 0..<pairs {
            let receiver = UDPSocket(host: live.host)
            try receiver.bind(port: UInt16(7000 + i))
            receivers.append(receiver)
            let sender = UDPSocket(host: live.host)
            try sender.bind(port: UInt16(6000 + i))
            senders.append(sender)
        }
        let tallies = (0..<pairs).map { _ in ReceiverTally() }
        var threads: [JoinableThread] = []
        for i in 0..<pairs {
            let receiver = receivers[i], tally = tallies[i]
            threads.append(JoinableThread(name: "recv-\(i)") {
                var expected = 0
                while let datagram = try? receiver.receive(timeout: .milliseconds(1500)) {
                    tally.received += 1
                    let p = datagram.payload
                    guard p.count == 64, p[0] == UInt8(i) else { tally.corrupt += 1; continue }
                    let sequence = Int(p[1]) << 16 | Int(p[2]) << 8 | Int(p[3])
                    if sequence < expected { tally.outOfOrder += 1 }
                    expected = sequence + 1
                    if p[4...].contains(where: { $0 != UInt8(truncatingIfNeeded: sequence) }) { tally.corrupt += 1 }
                }
            })
            let sender = senders[i]
            threads.append(JoinableThread(name: "send-\(i)") {
                for sequence in 0..<perPair {
                    var payload = [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: 64)
                    payload[0] = UInt8(i)
                    payload[1] = UInt8(sequence >> 16 & 0xFF)
                    payload[2] = UInt8(sequence >> 8 & 0xFF)
                    payload[3] = UInt8(sequence & 0xFF)
                    // Blocking send: backpressure instead of loss on the way out.
                    _ = try? sender.send(payload, to: SocketAddress(FrameBuilder.peerIP, UInt16(7000 + i)), timeout: .seconds(10))
                }
            })
        }
        for thread in threads { thread.join() }

        let counters = live.host.counters
        let received = tallies.reduce(0) { $0 + $1.received }
        let sent = Int(counters[.udpTxDatagrams])
        #expect(sent == pairs * perPair, "every send was accepted (backpressure, not loss)")
        #expect(tallies.allSatisfy { $0.corrupt == 0 && $0.outOfOrder == 0 })
        // Receivers may fall behind; the bounded queues then drop, and count it.
        #expect(received + Int(counters[.udpDropQueueFull]) == sent,
                "received \(received) + dropped \(counters[.udpDropQueueFull]) != sent \(sent)")
        #expect(counters[.ethernetTxDropLinkFull] == 0, "\(counters.all.filter { $0.value != 0 })")
    }

    /// Many threads hammering one socket's calls at once stay consistent,
    /// and none of them misses its wake-up: a blocking send that waited
    /// while another thread's call went through is woken as soon as there
    /// is room, never left to its timeout (with one shared event that the
    /// next caller reset, ~1 run in 8 lost a wake-up and a send timed out).
    @Test func manyThreadsOnOneSocket() throws {
        let live = LiveHost()
        live.learnPeer()
        let socket = UDPSocket(host: live.host)
        try socket.bind(port: 5000)
        let reflector = Reflector(link: live.link)
        reflector.start()
        defer { reflector.stop() }
        let total = Atomic<Int>(0)
        let sendsTimedOut = Atomic<Int>(0)
        let threads = (0..<4).map { t in
            JoinableThread(name: "hammer-\(t)") {
                for _ in 0..<500 {
                    do {
                        try socket.send([UInt8(t)], to: SocketAddress(FrameBuilder.peerIP, 5000), timeout: .seconds(5))
                    } catch {
                        sendsTimedOut.add(1, ordering: .relaxed)
                    }
                    _ = socket.readiness
                    if (try? socket.receive()) != nil { total.add(1, ordering: .relaxed) }
                }
            }
        }
        for thread in threads { thread.join() }
        while (try? socket.receive(timeout: .milliseconds(300))) != nil { total.add(1, ordering: .relaxed) }
        let counters = live.host.counters
        #expect(sendsTimedOut.load(ordering: .relaxed) == 0)
        #expect(total.load(ordering: .relaxed) + Int(counters[.udpDropQueueFull]) == 2000)
    }
}
