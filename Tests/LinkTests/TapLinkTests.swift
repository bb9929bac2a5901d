import Glibc
import SocketAPI
import Synchronization
import Testing
import TestSupport
import Wire
@testable import Link

/// The TAP link over a datagram socket pair standing in for the TAP fd (one
/// frame per read and write, pollable), in both I/O modes, with and without
/// a virtio-net header; the test plays the kernel on the other end, and a
/// thread of its own runs the link's turns as the executor would.
@Suite(.serialized) struct TapLinkTests {
    /// A link on one end of a socket pair, its turns on a thread of their own.
    final class Harness: @unchecked Sendable {
        let link: TapLink
        let peer: Int32
        private let stopping = Atomic<Bool>(false)
        private var thread: JoinableThread?
        /// What the link handed to the core, in order. Guarded by `lock`.
        private var received: [(bytes: [UInt8], checksum: ChecksumOffload)] = []
        private let lock = Lock()
        /// Echo every frame received back into the TX ring, as a stack answering would.
        let echoes: Bool
        /// Rewind the emptied TX ring before each turn's frames, as the host
        /// does (only when the link's thread is the only producer).
        let rewinds: Bool
        /// Turns the link thread has made.
        let turns = Atomic<Int>(0)

        /// - Parameter deviceSendBuffer: how much the "device" end holds
        ///   before refusing writes (EAGAIN) until the peer reads.
        init(mode: LinkIOMode, offloads: TapOffloads = .none, receiveCapacity: Int? = nil, echoes: Bool = false,
             rewinds: Bool = false, deviceSendBuffer: Int32 = 4 << 20, device deviceMode: DeviceMode = .tap,
             sleepMilliseconds: UInt64 = 20, polls: Bool = false) {
            var fds: [Int32] = [0, 0]
            precondition(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
            // The peer blocks, so the test's writes wait for the link rather than fail.
            _ = fcntl(fds[1], F_SETFL, 0)
            var size: Int32 = 4 << 20
            var deviceSend = deviceSendBuffer
            setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &deviceSend, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            link = TapLink(device: TapDevice(adopting: fds[0], name: "pair", offloads: offloads, mode: deviceMode),
                           receiveCapacity: receiveCapacity, ioMode: mode)
            peer = fds[1]
            self.echoes = echoes
            self.rewinds = rewinds
            self.sleepNanoseconds = sleepMilliseconds * 1_000_000
            self.polls = polls
        }

        /// Turns never sleep: the link's thread busy-polls, as a polling executor does.
        let polls: Bool

        /// How long a turn may sleep when nothing comes.
        let sleepNanoseconds: UInt64

        /// Starts the link's thread (after the test queued what must go out together).
        func start() {
            thread = JoinableThread(name: "link-turns") { [self] in
                link.open()
                while !stopping.load(ordering: .relaxed) {
                    link.exchange(waitUntil: polls ? nil : monotonicNanoseconds() + sleepNanoseconds)
                    turns.add(1, ordering: .relaxed)
                    var batch: [([UInt8], ChecksumOffload)] = []
                    if rewinds && link.tx.isEmpty { link.rewindTransmitRing() }
                    _ = link.receive(upTo: 64) { frame, checksum in
                        batch.append((Array(frame), checksum))
                        if echoes { _ = link.tx.push(frame) }
                    }
                    if !batch.isEmpty {
                        lock.lock()
                        received += batch.map { (bytes: $0.0, checksum: $0.1) }
                        lock.unlock()
                    }
                }
                link.close()
            }
        }

        /// Stops the link's thread (then its rings may be looked at).
        func stop() {
            stopping.store(true, ordering: .sequentiallyConsistent)
            link.wake()
            thread?.join()
            thread = nil
        }

        deinit {
            stop()
            close(peer)
        }

        /// Queues `frames` for the device, as the core would, and wakes the link.
        func send(_ frames: [[UInt8]], checksum: ChecksumOffload = .none) {
            for frame in frames { #expect(frame.withUnsafeBytes { link.tx.push($0, checksum: checksum) }) }
            link.wake()
        }

        /// The next frame the link wrote to the device, or nil after two seconds.
        func frameFromDevice(timeoutMilliseconds: Int32 = 2000) -> [UInt8]? {
            var pollfd = Glibc.pollfd(fd: peer, events: Int16(POLLIN), revents: 0)
            guard poll(&pollfd, 1, timeoutMilliseconds) == 1 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 70000)
            let n = read(peer, &buffer, buffer.count)
            return n > 0 ? Array(buffer[0..<n]) : nil
        }

        /// Writes `frame` as the kernel would hand it over.
        func deliver(_ frame: [UInt8]) {
            #expect(write(peer, frame, frame.count) == frame.count)
        }

        /// What the link handed to the core, once `count` frames came (or two seconds passed).
        func receivedFrames(_ count: Int) -> [(bytes: [UInt8], checksum: ChecksumOffload)] {
            let deadline = Deadline(.seconds(2))
            while true {
                lock.lock()
                let frames = received
                lock.unlock()
                if frames.count >= count || deadline.hasPassed { return frames }
                link.wake()
                usleep(200)
            }
        }
    }

    static func frame(_ index: Int, length: Int) -> [UInt8] {
        (0..<length).map { UInt8(truncatingIfNeeded: index &* 31 &+ $0) }
    }

    static let virtio = TapOffloads(virtioHeader: true, checksum: true, udpSegmentation: true)

    /// A frame with a virtio-net header in front, as a TAP device with IFF_VNET_HDR carries it.
    static func withHeader(_ header: VirtioNetHeader, _ frame: [UInt8]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: VirtioNetHeader.length)
        bytes.withUnsafeMutableBytes { header.emit(into: $0.baseAddress!) }
        return bytes + frame
    }

    /// Datagrams of one flow from the stack to the peer, as the core builds
    /// them with checksum offload: consecutive identifications, partial checksums.
    static func run(_ count: Int, payload: Int, last: Int? = nil, port: UInt16 = 7, firstID: UInt16 = 100) -> [[UInt8]] {
        (0..<count).map { index in
            let size = index == count - 1 ? (last ?? payload) : payload
            return FrameBuilder.withPartialUDPChecksum(FrameBuilder.udpFrame(
                sourcePort: port, destinationPort: 40000, payload: (0..<size).map { UInt8(truncatingIfNeeded: index &+ $0) },
                source: FrameBuilder.stackIP, destination: FrameBuilder.peerIP, ethernetDestination: FrameBuilder.peerMAC,
                ethernetSource: FrameBuilder.stackMAC, identification: firstID &+ UInt16(index)))
        }
    }

    /// `frame` with its UDP checksum completed, as the peer receives it.
    static func completed(_ frame: [UInt8]) -> [UInt8] {
        var copy = frame
        copy.withUnsafeMutableBytes { _ = completeChecksum(in: $0, start: 34, offset: 6) }
        return copy
    }

    // MARK: Plain frames

    @Test(arguments: LinkIOMode.allCases)
    func framesFromTheDeviceReachTheCoreInOrderAndIntact(mode: LinkIOMode) {
        let harness = Harness(mode: mode)
        harness.start()
        let sent = (0..<500).map { Self.frame($0, length: 60 + $0 % 1400) }
        for frame in sent { harness.deliver(frame) }
        #expect(harness.receivedFrames(sent.count).map(\.bytes) == sent)
        #expect(harness.link.counters[.rxFrames] == 500)
        #expect(harness.link.ioMode == mode)
    }

    /// A watched eventfd (a served process's doorbell) ends the link's sleep
    /// each time it is written, without the link's own wake-up; once
    /// unwatched it no longer does.
    @Test(arguments: LinkIOMode.allCases)
    func aWatchedDescriptorEndsTheSleep(mode: LinkIOMode) {
        var fds: [Int32] = [0, 0]  // a device nobody writes to
        precondition(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
        defer { close(fds[1]) }
        let link = TapLink(device: TapDevice(adopting: fds[0], name: "pair"), ioMode: mode)
        let doorbell = Wakeup()
        let turns = Atomic<Int>(0)
        let watching = Atomic<Bool>(true)
        let stopping = Atomic<Bool>(false)
        let thread = JoinableThread(name: "link-watch") {
            link.open()
            link.watch(doorbell.fd)
            var watched = true
            while !stopping.load(ordering: .sequentiallyConsistent) {
                if watched && !watching.load(ordering: .sequentiallyConsistent) {
                    link.unwatch(doorbell.fd)
                    watched = false
                }
                turns.add(1, ordering: .sequentiallyConsistent)
                link.exchange(waitUntil: monotonicNanoseconds() + 30_000_000_000)  // only a wake-up ends it
            }
            link.close()
        }
        defer {
            stopping.store(true, ordering: .sequentiallyConsistent)
            link.wake()
            thread.join()
        }
        #expect(eventually { turns.load(ordering: .sequentiallyConsistent) >= 1 })
        for _ in 0..<5 {
            let before = turns.load(ordering: .sequentiallyConsistent)
            doorbell.forceSignal()
            #expect(eventually { turns.load(ordering: .sequentiallyConsistent) > before })
        }
        #expect(link.counters[.wakeups] >= 5)
        watching.store(false, ordering: .sequentiallyConsistent)
        link.wake()  // the next turn unwatches
        #expect(eventually { turns.load(ordering: .sequentiallyConsistent) >= 7 })
    }

    @Test(arguments: LinkIOMode.allCases)
    func framesFromTheCoreReachTheDeviceInOrderAndIntact(mode: LinkIOMode) {
        let harness = Harness(mode: mode)
        harness.start()
        let sent = (0..<500).map { Self.frame($0, length: 42 + $0 % 1472) }
        var received: [[UInt8]] = []
        var next = 0
        while received.count < sent.count {
            // Keep the ring topped up while reading, as the stack would.
            while next < sent.count, sent[next].withUnsafeBytes({ harness.link.tx.push($0) }) { next += 1 }
            harness.link.wake()
            guard let frame = harness.frameFromDevice() else { break }
            received.append(frame)
        }
        #expect(received == sent)
        // A frame is readable on the device before the link reaps its write's completion.
        #expect(eventually { harness.link.counters[.txFrames] == 500 })
    }

    /// TUN: IP packets from the device reach the core behind a made-up
    /// Ethernet header (no addresses, the packet's version's type); the
    /// core's frames leave without their header; plain read()/write().
    @Test(arguments: LinkIOMode.allCases)
    func aTunDeviceCarriesPacketsTheCoreSeesAsFrames(mode: LinkIOMode) throws {
        let harness = Harness(mode: mode, device: .tun)
        harness.start()
        let packet = FrameBuilder.ipv4(proto: .udp, payload: FrameBuilder.udp(sourcePort: 1, destinationPort: 7, payload: [1, 2, 3]))
        harness.deliver(packet)
        let received = try #require(harness.receivedFrames(1).first)
        #expect(received.bytes == [UInt8](repeating: 0, count: 12) + [0x08, 0x00] + packet)
        #expect(harness.link.ioMode == .syscalls)
        let frame = FrameBuilder.ethernet(destination: .zero, source: FrameBuilder.stackMAC, type: .ipv4, payload: packet)
        harness.send([frame])
        #expect(harness.frameFromDevice() == packet)
    }

    /// Frames echoed as they come, one at a time: each answer goes out in
    /// the turn after its frame arrived.
    /// Each frame answered intact; with the host's rewinding, the answers
    /// keep going out from the TX ring's first slot (warm in the cache)
    /// instead of walking the whole ring.
    @Test(arguments: LinkIOMode.allCases)
    func aPingPongIsAnsweredFrameByFrame(mode: LinkIOMode) {
        let harness = Harness(mode: mode, echoes: true, rewinds: true)
        harness.start()
        for index in 0..<200 {
            let frame = Self.frame(index, length: 60 + index * 7 % 1400)
            harness.deliver(frame)
            guard let echo = harness.frameFromDevice() else {
                Issue.record("frame \(index) not answered")
                return
            }
            #expect(echo == frame)
        }
        harness.stop()
        #expect(harness.link.tx.produced & (harness.link.tx.capacity - 1) <= 1)
        #expect(harness.link.tx.produced >= 200)
        // The frames came in a few RX buffers, reused (not all 1024 in turn).
        let rx = harness.link.rx
        #expect(rx.produced == 200)
        #expect(Set((0..<200).map { rx.buffer(at: $0) }).count <= 32)
    }

    /// A burst larger than the RX buffers the kernel holds arrives whole and
    /// in order: the kernel ran out (counted), the link gave it more.
    @Test(arguments: LinkIOMode.allCases)
    func aBurstBeyondTheBuffersGivenArrivesWholeAndInOrder(mode: LinkIOMode) {
        let harness = Harness(mode: mode)
        let sent = (0..<600).map { Self.frame($0, length: 60 + $0 * 13 % 1400) }
        for frame in sent { harness.deliver(frame) }  // all waiting before the link looks
        harness.start()
        #expect(harness.receivedFrames(sent.count).map(\.bytes) == sent)
        #expect(harness.link.counters[.rxFrames] == 600)
        if mode == .ioUring { #expect(harness.link.counters[.rxBufferExhausted] > 0) }
    }

    /// More frames than one batch of writes (a few large datagrams' fragments)
    /// all reach the device in the turn that found them, before the link
    /// sleeps: none waits in the ring for the next wake-up (here 30 s away).
    @Test(arguments: LinkIOMode.allCases)
    func aBurstBeyondOneBatchOfWritesLeavesBeforeTheLinkSleeps(mode: LinkIOMode) {
        let harness = Harness(mode: mode, sleepMilliseconds: 30_000)
        harness.start()
        let sent = (0..<300).map { Self.frame($0, length: 100 + $0 % 700) }
        harness.send(sent)
        var received: [[UInt8]] = []
        while received.count < sent.count, let frame = harness.frameFromDevice() { received.append(frame) }
        #expect(received.count == sent.count)
        #expect(received.count != sent.count || received == sent)  // in order, byte for byte
        #expect(harness.link.counters[.txFrames] == 300)
        #expect(harness.turns.load(ordering: .relaxed) <= 2)
    }

    /// A busy-polling turn enters the kernel only when there is something
    /// there for it (io_uring flags pending task work in shared memory): no
    /// system call per turn while nothing comes, and a frame that comes is
    /// still taken at once.
    @Test func pollingTurnsEnterTheKernelOnlyWhenItHasSomething() {
        let harness = Harness(mode: .ioUring, polls: true)
        harness.start()
        func waitForTurns(_ count: Int) {
            let deadline = Deadline(.seconds(5))
            while harness.turns.load(ordering: .relaxed) < count && !deadline.hasPassed { sched_yield() }
        }
        waitForTurns(1000)  // the first turns submit the reads and watches
        let enters = harness.link.counters[.ioUringEnters]
        let turns = harness.turns.load(ordering: .relaxed)
        let polls = harness.link.counters[.polls]
        waitForTurns(turns + 5000)
        #expect(harness.turns.load(ordering: .relaxed) >= turns + 5000)
        #expect(harness.link.counters[.ioUringEnters] == enters, "a turn with nothing pending entered the kernel")
        #expect(harness.link.counters[.polls] - polls >= 5000)
        harness.deliver(Self.frame(1, length: 200))
        #expect(harness.receivedFrames(1).map(\.bytes) == [Self.frame(1, length: 200)])
        #expect(harness.link.counters[.ioUringEnters] > enters)
    }

    /// When the device will not take more (the peer's queue is full), frames
    /// wait in the ring (counted as retries) instead of being dropped, and
    /// the link sleeps until the device takes writes again instead of
    /// trying again and again.
    @Test(arguments: LinkIOMode.allCases)
    func framesTheDevicePutsOffAreSentLaterNotDropped(mode: LinkIOMode) {
        let harness = Harness(mode: mode, deviceSendBuffer: 8192)
        harness.start()
        let sent = (0..<400).map { Self.frame($0, length: 1000) }
        harness.send(sent)
        // The peer reads nothing yet: its small buffer fills, then writes are refused.
        let deadline = Deadline(.seconds(2))
        while harness.link.counters[.txRetries] == 0 && !deadline.hasPassed { usleep(500) }
        #expect(harness.link.counters[.txRetries] > 0)
        let turnsWhileBlocked = harness.turns.load(ordering: .relaxed)
        usleep(50_000)
        // Blocked, the link waits for the device (a turn each 20 ms at most), it does not spin.
        #expect(harness.turns.load(ordering: .relaxed) - turnsWhileBlocked < 20)
        var received: [[UInt8]] = []
        while received.count < sent.count, let frame = harness.frameFromDevice() { received.append(frame) }
        #expect(received == sent)
        #expect(harness.link.counters[.txErrors] == 0)
    }

    // MARK: Virtio-net header and offloads

    /// A frame the kernel hands over with its UDP checksum partial reaches
    /// the core vouched for, as it came (the core does not verify it).
    @Test(arguments: LinkIOMode.allCases)
    func aPartialChecksumFromTheKernelIsCompleted(mode: LinkIOMode) {
        let harness = Harness(mode: mode, offloads: Self.virtio)
        harness.start()
        let whole = FrameBuilder.udpFrame(destinationPort: 7, payload: Array("hello, checksum".utf8))
        let partial = FrameBuilder.withPartialUDPChecksum(whole)
        #expect(partial != whole)
        harness.deliver(Self.withHeader(VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 34, checksumOffset: 6), partial))
        harness.deliver(Self.withHeader(VirtioNetHeader(), whole))
        let received = harness.receivedFrames(2)
        #expect(received.map(\.bytes) == [partial, whole])
        #expect(received.map(\.checksum) == [.verified(start: 34, offset: 6), .none])
        #expect(harness.link.counters[.rxChecksumsPartial] == 1)
    }

    /// A header shorter than 10 bytes, or a checksum location outside its
    /// frame, drops that frame (counted); the next one still comes through.
    @Test(arguments: LinkIOMode.allCases)
    func aBadVirtioHeaderDropsItsFrameAndIsCounted(mode: LinkIOMode) {
        let harness = Harness(mode: mode, offloads: Self.virtio)
        harness.start()
        let good = FrameBuilder.udpFrame(destinationPort: 7, payload: [1, 2, 3])
        harness.deliver([1, 0, 0])
        harness.deliver(Self.withHeader(VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 200, checksumOffset: 6), good))
        harness.deliver(Self.withHeader(VirtioNetHeader(gsoType: VirtioNetHeader.GSOType.tcpv4, gsoSize: 100), good))
        harness.deliver(Self.withHeader(VirtioNetHeader(), good))
        #expect(harness.receivedFrames(1).map(\.bytes) == [good])
        #expect(harness.link.counters[.rxDropBadVirtioHeader] == 2)
        #expect(harness.link.counters[.rxDropBadSegmentation] == 1)
        #expect(harness.link.counters[.rxFrames] == 4)
    }

    /// A UDP GSO frame from the kernel reaches the core as the datagrams it
    /// carries, byte for byte what they would be unsegmented (lengths,
    /// identifications, both checksums), the last one shorter.
    @Test(arguments: LinkIOMode.allCases)
    func aSegmentedFrameFromTheKernelIsCutIntoItsDatagrams(mode: LinkIOMode) {
        let harness = Harness(mode: mode, offloads: Self.virtio)
        harness.start()
        let payloads = (0..<5).map { index in (0..<(index == 4 ? 37 : 100)).map { UInt8(truncatingIfNeeded: index * 7 + $0) } }
        let expected = payloads.enumerated().map { index, payload in
            FrameBuilder.udpFrame(destinationPort: 7, payload: payload, identification: 0x4000 + UInt16(index))
        }
        // The kernel's GSO frame: the first datagram's headers sized for all, the payloads after.
        var whole = FrameBuilder.udpFrame(destinationPort: 7, payload: payloads.flatMap { $0 }, identification: 0x4000)
        whole = FrameBuilder.withPartialUDPChecksum(whole)
        harness.deliver(Self.withHeader(VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.GSOType.udpL4,
                                                        headerLength: 9999, gsoSize: 100, checksumStart: 34, checksumOffset: 6), whole))
        let received = harness.receivedFrames(5)
        #expect(received.map(\.bytes) == expected)
        #expect(received.allSatisfy { $0.checksum == .verified(start: 34, offset: 6) })
        #expect(harness.link.counters[.rxSegmentedFrames] == 1)
        #expect(harness.link.counters[.rxSegments] == 5)
    }

    /// Consecutive datagrams of one flow go to the device as one write, which
    /// the kernel cuts back into exactly those datagrams.
    @Test(arguments: LinkIOMode.allCases)
    func aRunOfOneFlowGoesOutAsOneSegmentationWrite(mode: LinkIOMode) throws {
        let harness = Harness(mode: mode, offloads: Self.virtio)
        let frames = Self.run(10, payload: 64, last: 20)
        harness.send(frames, checksum: .partial(start: 34, offset: 6))
        harness.start()
        let written = try #require(harness.frameFromDevice())
        let header = try #require(written.withUnsafeBytes { VirtioNetHeader($0) })
        #expect(header.gsoType == VirtioNetHeader.GSOType.udpL4)
        #expect(header.flags == VirtioNetHeader.needsChecksum)
        #expect(header.gsoSize == 64)
        #expect(header.checksumStart == 34 && header.checksumOffset == 6)
        let whole = Array(written[VirtioNetHeader.length...])
        #expect(whole.count == 42 + 9 * 64 + 20)
        // The kernel's cut, done here the same way: the original datagrams with complete checksums.
        let segments = whole.withUnsafeBytes { bytes in
            (0..<10).compactMap { index -> [UInt8]? in
                var out = [UInt8](repeating: 0, count: 1514)
                guard let n = out.withUnsafeMutableBytes({ UDPSegmentation.writeSegment(index, of: bytes, segmentSize: 64, into: $0) }) else { return nil }
                return Array(out[0..<n])
            }
        }
        #expect(segments == frames.map(Self.completed))
        #expect(harness.frameFromDevice(timeoutMilliseconds: 100) == nil, "one write carried the run")
        #expect(harness.link.counters[.txCoalescedWrites] == 1)
        #expect(harness.link.counters[.txCoalescedSegments] == 10)
        #expect(harness.link.counters[.txFrames] == 10)
    }

    /// Runs never mix flows or reorder frames: datagrams to two peers
    /// interleaved go out one by one, in order; a larger datagram cannot
    /// follow in a run (it starts the next), a shorter one ends it.
    @Test(arguments: LinkIOMode.allCases)
    func runsNeverMixFlowsOrReorder(mode: LinkIOMode) {
        let harness = Harness(mode: mode, offloads: Self.virtio)
        let a = Self.run(3, payload: 50, port: 7, firstID: 10)
        let b = Self.run(3, payload: 50, port: 9, firstID: 20)
        let interleaved = [a[0], b[0], a[1], b[1], a[2], b[2]]
        let sizes = [Self.run(1, payload: 80, firstID: 30)[0], Self.run(1, payload: 90, firstID: 31)[0],
                     Self.run(1, payload: 80, firstID: 32)[0], Self.run(1, payload: 90, firstID: 33)[0]]
        harness.send(interleaved + sizes, checksum: .partial(start: 34, offset: 6))
        harness.start()
        var writes: [[UInt8]] = []
        while let frame = harness.frameFromDevice(timeoutMilliseconds: 300) { writes.append(frame) }
        // Each write cut as the kernel would (checksums completed): the datagrams, in the original order.
        let datagrams = writes.flatMap { write -> [[UInt8]] in
            let frame = Array(write[VirtioNetHeader.length...])
            guard write[1] == VirtioNetHeader.GSOType.udpL4 else { return [Self.completed(frame)] }
            let size = Int(write.withUnsafeBytes { VirtioNetHeader($0)!.gsoSize })
            return frame.withUnsafeBytes { bytes in
                (0..<(UDPSegmentation.segmentCount(of: bytes, segmentSize: size) ?? 0)).map { index in
                    var out = [UInt8](repeating: 0, count: 1514)
                    let n = out.withUnsafeMutableBytes { UDPSegmentation.writeSegment(index, of: bytes, segmentSize: size, into: $0)! }
                    return Array(out[0..<n])
                }
            }
        }
        #expect(datagrams == (interleaved + sizes).map(Self.completed))
        // The interleaved flows went one by one; of the sizes, 90 then 80 made the only run.
        #expect(writes.count == 6 + 3)
        #expect(harness.link.counters[.txCoalescedWrites] == 1)
        #expect(harness.link.counters[.txCoalescedSegments] == 2)
    }

    /// Without checksum offload the kernel gets every frame exactly as the
    /// core built it, with a header that asks for nothing.
    @Test(arguments: LinkIOMode.allCases)
    func framesWithoutOffloadGoOutWithAnEmptyHeader(mode: LinkIOMode) throws {
        let harness = Harness(mode: mode, offloads: TapOffloads(virtioHeader: true, checksum: false, udpSegmentation: false))
        let frames = Self.run(3, payload: 64).map(Self.completed)
        harness.send(frames)
        harness.start()
        var written: [[UInt8]] = []
        while written.count < 3, let frame = harness.frameFromDevice() { written.append(frame) }
        #expect(written == frames.map { Self.withHeader(VirtioNetHeader(), $0) })
        #expect(harness.link.completesChecksums == false)
    }
}
