import CTapstackSystem
import CTun
import Glibc
import SocketAPI
import Synchronization
import Wire

/// How the link moves frames to and from the TAP device.
public enum LinkIOMode: String, Sendable, CaseIterable {
    /// One `read()`, `write()` or `writev()` system call per frame or run.
    case syscalls
    /// io_uring: a multishot read fills the RX FIFO's slots as frames
    /// arrive, and one `io_uring_enter` per turn submits the writes and
    /// collects the reads (kernel 6.7); falls back to `syscalls` with a notice
    /// when the kernel refuses.
    case ioUring = "io_uring"
}

/// The TAP device's I/O: the only code that touches its descriptor, run by
/// the executor's thread in turns (`exchange`), with the RX and TX FIFOs as
/// the boundary to the stack core.
///
/// Receiving: with io_uring, the RX FIFO's free buffers are the kernel's
/// provided buffers (a window of them, the most recently freed first: see
/// `adaptWindow`); one multishot read puts each frame in the next one given
/// and the completion publishes it, so frames arrive with no system call of
/// their own. A virtio-net header comes before each frame: a checksum the kernel
/// left partial is vouched for (`.verified`: the data never crossed a wire;
/// captures get it completed), and a UDP GSO frame is cut into its datagrams
/// when the core takes it (`receive`).
///
/// Sending: consecutive frames of one UDP flow with equal payloads (the last
/// may be shorter) go out as one segmentation write the kernel cuts back into
/// the same datagrams, so a batch of echoes to one peer costs one write; other
/// frames go one by one, their UDP checksum completed by the kernel.
public final class TapLink: LinkEndpoint {
    /// The TAP device this link owns.
    public let device: TapDevice
    public let rx: FrameRing
    public let tx: FrameRing
    /// What the link has done; readable from any thread.
    public let counters = LinkCounters()
    /// The largest frame read or written (no FCS, no virtio header).
    public let maximumFrameLength: Int
    /// The I/O mode asked for.
    public let requestedIOMode: LinkIOMode
    /// Frames in and out are copied here, if set.
    public let capture: PacketCapture?
    /// Sees every frame in and out on the link's thread (for trace logging); must not block.
    public let observer: (@Sendable (FrameDirection, UnsafeRawBufferPointer) -> Void)?

    public var completesChecksums: Bool { device.offloads.checksum }
    /// The I/O mode in use (settled once `open` returned).
    public var ioMode: LinkIOMode { modeState.withLock { $0.mode } }
    /// Why io_uring is not used, when it was asked for and refused (nil otherwise).
    public var ioUringUnavailableReason: String? { modeState.withLock { $0.reason } }
    /// Whether runs of one flow's datagrams go out as single segmentation writes.
    public var coalescesWrites: Bool { coalescing.load(ordering: .relaxed) }

    private let modeState: Mutex<(mode: LinkIOMode, reason: String?)>
    private let coalescing: Atomic<Bool>
    /// Ends a sleep in `exchange`: io_uring polls it (never draining it),
    /// read()/write() mode polls and drains it.
    private let wakeFD: Int32

    // The I/O thread's own state: touched only by the thread that called
    // `open` (and `init`/`deinit`, before and after it runs).
    @exclusivity(unchecked) nonisolated(unsafe) private var io = IOState()

    private struct IOState {
        var ring: OpaquePointer?
        /// The ring runs completions' task work only while an enter waits
        /// (DEFER_TASKRUN): a chain of linked writes then goes on only as
        /// far as the enter waits for completions.
        var defersTaskWork = false
        var readArmed = false
        /// RX positions below this have a buffer in the kernel's buffer ring
        /// (from `rx.produced` on: given, not filled yet).
        var recycled = 0
        /// RX buffers nobody holds, the most recently freed last: handed out
        /// from the end, so a light load keeps reusing a few warm ones.
        var freeBuffers: [UInt16] = []
        /// The ids `provideBuffers` gives the kernel at once.
        var provideList: UnsafeMutablePointer<UInt16>?
        /// How many buffers the kernel may hold unfilled (see `adaptWindow`).
        var window = 0
        var producedAtLastTurn = 0
        var largestBurst = 0
        var turnsSinceShrink = 0
        /// A read found no buffer since the last turn (ENOBUFS).
        var exhausted = false
        /// TX positions below this have been handed to the device (written, or in flight).
        var queued = 0
        /// The device refused a write with EAGAIN: wait until it takes writes again.
        var transmitBlocked = false
        var writablePollArmed = false
        /// The writes of frames from the TX ring's consumer position on, in order.
        var groups: [WriteGroup] = []
        /// The tag the next submitted write gets.
        var nextTag: UInt64 = 0
        var completions: UnsafeMutablePointer<ctun_completion>?
        var completionCapacity = 0
        /// Run headers (virtio header + Ethernet/IPv4/UDP) and iovecs for the writes in flight.
        var headers: UnsafeMutableRawPointer?
        var iovecs: UnsafeMutablePointer<iovec>?
        /// A segment cut from a GSO frame, while the core handles it.
        var segment: UnsafeMutableRawBufferPointer?
        /// For asking the interface's flags (up or down).
        var flagsSocket: Int32 = -1
        /// Descriptors that also end a sleep (`watch`), with their poll's
        /// tag and whether it is armed in the ring.
        var watches: [(fd: Int32, tag: UInt64, armed: Bool)] = []
        /// The descriptor of each watch's tag.
        var watchedByTag: [UInt64: Int32] = [:]
        /// Watched descriptors that fired, until `takeFiredDescriptors`.
        var fired: [Int32] = []
        var nextWatchTag: UInt64 = 0
        /// Watches not armed in the ring yet (new, or ended by the kernel).
        var unarmedWatches = 0
        /// read()/write() mode's poll set: device, wake-up, then `watches`.
        var pollSet: [pollfd] = []
    }

    /// Frames `first ..< first + count` of the TX ring, written as one operation.
    private struct WriteGroup {
        enum State { case toSubmit, inFlight(tag: UInt64), done }
        var first: Int
        var count: Int
        var coalesced: Bool
        var state = State.toSubmit
    }

    /// The fewest RX buffers the kernel holds: enough for a ping-pong and
    /// small bursts, few enough to stay in the cache and the TLB (with all
    /// 1024 cycling, the kernel's copy of each frame cost 0.6 us more).
    private static let minimumWindow = 32
    /// Turns after which the kernel's share shrinks if bursts stayed small.
    private static let windowShrinkTurns = 1024

    /// Writes submitted per enter at most (each a frame or a run).
    private static let maximumGroups = 64
    private static let headerRoom = 64
    private static let submissionEntries: UInt32 = 128
    /// The longest a turn that does not sleep waits for its chain of writes
    /// (ns): they complete at once, this only bounds a surprise.
    private static let writeChainTimeout: Int64 = 1_000_000

    /// - Parameters:
    ///   - ioMode: io_uring (falls back to syscalls when refused) or syscalls.
    ///   - capture: frames in and out are copied here by the link's thread.
    ///   - observer: called with every frame in and out, on the link's thread.
    public init(device: TapDevice, receiveCapacity: Int? = nil, transmitCapacity: Int = 1024,
                maximumFrameLength: Int = 1514, ioMode: LinkIOMode = .ioUring, capture: PacketCapture? = nil,
                observer: (@Sendable (FrameDirection, UnsafeRawBufferPointer) -> Void)? = nil) {
        self.device = device
        self.maximumFrameLength = maximumFrameLength
        // A TUN device's packets are read behind room for the Ethernet
        // header the link makes up: plain read() and write() do that simply.
        requestedIOMode = device.mode == .tun ? .syscalls : ioMode
        self.capture = capture
        self.observer = observer
        let headroom = device.offloads.virtioHeader ? VirtioNetHeader.length : 0
        // A GSO frame from the kernel is up to 64 KiB: such slots are large
        // (64 MiB of address space for 1024) but only touched as far as frames
        // fill them. 1024 slots: with 256, bursts ran the kernel out of
        // buffers and its queue overflowed at half the closed-loop rate.
        let segmented = device.offloads.udpSegmentation
        rx = FrameRing(capacity: receiveCapacity ?? 1024,
                       slotSize: segmented ? EthernetHeader.length + 0xFFFF : maximumFrameLength, headroom: headroom)
        tx = FrameRing(capacity: transmitCapacity, slotSize: maximumFrameLength, headroom: headroom)
        precondition(rx.capacity <= 1 << 15, "at most 32768 receive buffers")
        io.freeBuffers = (0..<rx.capacity).reversed().map { UInt16($0) }
        modeState = Mutex(device.mode == .tun && ioMode == .ioUring
            ? (.syscalls, "a TUN device is read and written with read()/write() (io_uring is used with TAP devices)") : (ioMode, nil))
        coalescing = Atomic(device.offloads.udpSegmentation && device.offloads.checksum)
        wakeFD = csys_eventfd()
        precondition(wakeFD >= 0, "eventfd failed: errno \(errno)")
    }

    deinit {
        if let ring = io.ring { ctun_ring_close(ring) }
        io.completions?.deallocate()
        io.provideList?.deallocate()
        io.headers?.deallocate()
        io.iovecs?.deallocate()
        io.segment?.deallocate()
        if io.flagsSocket >= 0 { Glibc.close(io.flagsSocket) }
        Glibc.close(wakeFD)
    }

    // MARK: Opening and closing

    public var isUp: Bool {
        if io.flagsSocket < 0 { io.flagsSocket = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        return ctun_interface_is_up(io.flagsSocket, device.name) == 1
    }

    public func open() {
        io.headers = .allocate(byteCount: Self.maximumGroups * Self.headerRoom, alignment: 64)
        io.iovecs = .allocate(capacity: Self.maximumGroups * (UDPSegmentation.maximumSegments + 1))
        io.segment = .allocate(byteCount: maximumFrameLength, alignment: 64)
        io.groups.reserveCapacity(Self.maximumGroups)
        guard requestedIOMode == .ioUring else { return }
        var err: Int32 = 0, stage: Int32 = 0
        let ring = ctun_ring_open(device.fd, wakeFD, rx.storage, UInt32(rx.capacity), UInt32(rx.stride),
                                  Self.submissionEntries, &err, &stage)
        guard let ring else {
            let why = switch UInt32(stage) {
            case CTUN_RING_PROBE.rawValue: "the kernel has no multishot read (6.7 or later needed)"
            case CTUN_RING_REGISTER.rawValue: "registering its buffers failed: \(String(cString: strerror(err)))"
            default: "the kernel refused it: \(String(cString: strerror(err)))"
            }
            fallBack("io_uring unavailable (\(why)); using read()/write()")
            return
        }
        // The kernel may write a whole slot: headroom and frame.
        precondition(rx.stride >= rx.headroom + rx.slotSize)
        io.ring = ring
        io.defersTaskWork = ctun_ring_defers_task_work(ring) != 0
        io.readArmed = true
        io.recycled = rx.produced
        io.producedAtLastTurn = rx.produced
        io.window = min(Self.minimumWindow, rx.capacity)
        io.provideList = .allocate(capacity: rx.capacity)
        io.completionCapacity = rx.capacity + Int(Self.submissionEntries) * 2
        io.completions = .allocate(capacity: io.completionCapacity)
        provideBuffers(ring)  // before the first enter submits the read
    }

    /// Leaves io_uring for read()/write(), saying why once.
    private func fallBack(_ reason: String) {
        if let ring = io.ring {
            ctun_ring_close(ring)
            io.ring = nil
        }
        // The buffers the kernel held unfilled are free again.
        while io.recycled != rx.produced {
            io.recycled &-= 1
            io.freeBuffers.append(UInt16(rx.buffer(at: io.recycled)))
        }
        // read()/write() writes from the ring's consumer position on.
        io.groups.removeAll()
        io.queued = tx.consumed
        modeState.withLock { $0 = (.syscalls, reason) }
    }

    public func close() {
        // Send what the stack queued before it stopped (bounded: a device
        // that takes nothing must not hold the shutdown up).
        if let ring = io.ring {
            for _ in 0..<64 where !tx.isEmpty {
                let submitted = queueWrites(ring)
                enter(ring, waitFor: submitted, timeout: 100_000_000)
                if io.transmitBlocked { break }
            }
            ctun_ring_close(ring)
            io.ring = nil
        } else {
            for _ in 0..<64 where !tx.isEmpty {
                writeDirectly()
                if io.transmitBlocked { break }
            }
        }
    }

    // MARK: Turns

    public func wake() { csys_eventfd_signal(wakeFD) }

    public var watchesDescriptors: Bool { true }

    public func watch(_ descriptor: Int32) {
        let tag = CTUN_TAG_WATCH | (io.nextWatchTag & 0xFFFF_FFFF)
        io.watches.append((descriptor, tag, false))
        io.unarmedWatches += 1
        io.watchedByTag[tag] = descriptor
        io.nextWatchTag &+= 1
    }

    public func takeFiredDescriptors(_ handle: (Int32) -> Void) {
        for descriptor in io.fired { handle(descriptor) }
        io.fired.removeAll(keepingCapacity: true)
    }

    public func unwatch(_ descriptor: Int32) {
        guard let index = io.watches.firstIndex(where: { $0.fd == descriptor }) else { return }
        let watch = io.watches.remove(at: index)
        io.watchedByTag[watch.tag] = nil
        if !watch.armed { io.unarmedWatches -= 1 }
        // The ring holds its own reference to the file: cancel the poll.
        if let ring = io.ring, watch.armed { _ = ctun_ring_unwatch(ring, watch.tag) }
    }

    public func exchange(waitUntil deadline: UInt64?) {
        exchange(waitUntil: deadline, now: deadline == nil || deadline == .max ? 0 : monotonicNanoseconds())
    }

    public func exchange(waitUntil deadline: UInt64?, now: UInt64) {
        if let ring = io.ring {
            exchangeThroughRing(ring, waitUntil: deadline, now: now)
        } else {
            exchangeDirectly(waitUntil: deadline, now: now)
        }
    }

    private func exchangeThroughRing(_ ring: OpaquePointer, waitUntil deadline: UInt64?, now: UInt64) {
        adaptWindow()
        provideBuffers(ring)
        if !io.readArmed && io.recycled != rx.produced { io.readArmed = ctun_ring_arm_read(ring) != 0 }
        if io.unarmedWatches > 0 {  // not a walk over every watch on every turn
            for index in io.watches.indices where !io.watches[index].armed {
                io.watches[index].armed = ctun_ring_watch(ring, io.watches[index].fd, io.watches[index].tag) != 0
                if io.watches[index].armed { io.unarmedWatches -= 1 }
            }
        }
        let inFlight = io.groups.contains { if case .inFlight = $0.state { true } else { false } }
        var submitted = queueWrites(ring)
        // More frames than one batch of writes (the fragments of a few large
        // datagrams, say): hand them all to the device now, a batch per
        // enter, rather than sleep with frames in the ring. Not when the
        // device puts writes off (its POLLOUT or a write's completion wakes
        // the executor then). What those enters reaped (frames, wake-ups) is
        // the next turn's: this one does not sleep. At most a ring's worth,
        // so threads that keep producing cannot hold the turn.
        var handedOver = false
        var batches = 0
        while submitted > 0, io.queued != tx.produced, !io.transmitBlocked, batches < tx.capacity / Self.maximumGroups {
            let writes = writesToWaitFor(submitted)
            enter(ring, waitFor: writes.count, timeout: writes.timeout)
            handedOver = true
            batches += 1
            guard io.ring != nil else { return }  // fell back to read()/write()
            submitted = queueWrites(ring)
        }
        // A busy-polling turn: enter only when the kernel has something
        // (a frame read, a wake-up, a completion) or there is work for it.
        if deadline == nil, !handedOver, submitted == 0, ctun_ring_has_pending(ring) == 0 {
            counters.add(.polls)
            return
        }
        var timeout: Int64 = -1
        if let deadline, deadline != .max {
            timeout = deadline > now ? Int64(clamping: deadline - now) : 0
        }
        // The writes complete within the enter (RWF_NOWAIT: done or put
        // off), so waiting for one completion more than them waits for a
        // frame, a wake-up or the timeout, in the same system call.
        var waitFor = 0
        if deadline != nil && timeout != 0 && !handedOver {
            waitFor = inFlight ? 1 : submitted + 1
            counters.add(.sleeps)
        } else {
            (waitFor, timeout) = writesToWaitFor(submitted)
        }
        enter(ring, waitFor: waitFor, timeout: timeout)
    }

    /// What an enter that does not sleep waits for after submitting
    /// `submitted` linked writes: nothing, except under DEFER_TASKRUN,
    /// where each write after a chain's first is task work that runs only
    /// while the enter waits, so it waits for them all (they complete at
    /// once, RWF_NOWAIT; the timeout bounds a surprise) rather than let the
    /// chain go on one write per enter.
    private func writesToWaitFor(_ submitted: Int) -> (count: Int, timeout: Int64) {
        io.defersTaskWork && submitted > 1 ? (submitted, Self.writeChainTimeout) : (0, 0)
    }

    /// One io_uring_enter: submits what is queued, waits for `waitFor`
    /// completions (or `timeout` ns, negative: no limit), handles what came.
    private func enter(_ ring: OpaquePointer, waitFor: Int, timeout: Int64) {
        counters.add(.ioUringEnters)
        let count = ctun_ring_enter(ring, UInt32(waitFor), timeout, io.completions, UInt32(io.completionCapacity))
        guard count >= 0 else {
            fallBack("io_uring failed (\(String(cString: strerror(-count)))); using read()/write()")
            return
        }
        var fallBackReason: String?
        for index in 0..<Int(count) {
            let completion = io.completions![index]
            switch completion.tag {
            case CTUN_TAG_READ:
                if completion.flags & CTUN_CQE_MORE == 0 { io.readArmed = false }
                if completion.res > 0 {
                    let bid = Int(completion.flags >> UInt32(CTUN_CQE_BUFFER_SHIFT))
                    guard bid == rx.buffer(at: rx.produced) else {
                        fallBackReason = "io_uring filled receive buffer \(bid) out of order; using read()/write()"
                        continue
                    }
                    publishReceived(length: Int(completion.res))
                } else if completion.res == -ENOBUFS {
                    counters.add(.rxBufferExhausted)
                    io.exhausted = true
                } else if completion.res == -EINVAL || completion.res == -EOPNOTSUPP || completion.res == -EBADFD {
                    fallBackReason = "the device does not take io_uring's multishot read (\(String(cString: strerror(-completion.res)))); using read()/write()"
                } else if completion.res < 0 && completion.res != -ECANCELED && completion.res != -EAGAIN {
                    counters.add(.rxErrors)
                }
            case CTUN_TAG_WAKE:
                counters.add(.wakeups)
            case CTUN_TAG_UNWATCH:
                break
            case let tag where tag & CTUN_TAG_WATCH != 0 && tag < CTUN_TAG_WRITABLE:
                counters.add(.wakeups)
                guard let descriptor = io.watchedByTag[tag] else { break }  // unwatched meanwhile
                if completion.res > 0 { io.fired.append(descriptor) }
                // Ended by the kernel (not cancelled by `unwatch`): arm it again next turn.
                if completion.flags & CTUN_CQE_MORE == 0, let index = io.watches.firstIndex(where: { $0.tag == tag }),
                   io.watches[index].armed {
                    io.watches[index].armed = false
                    io.unarmedWatches += 1
                }
            case CTUN_TAG_WRITABLE:
                io.writablePollArmed = false
                io.transmitBlocked = false
            default:
                finishWrite(tag: completion.tag, result: completion.res)
            }
        }
        releaseWritten()
        if let fallBackReason, !io.groups.contains(where: { if case .inFlight = $0.state { true } else { false } }) {
            fallBack(fallBackReason)
        } else if io.transmitBlocked && !io.writablePollArmed {
            io.writablePollArmed = ctun_ring_poll_writable(ring) != 0
        }
    }

    public func rewindTransmitRing() {
        guard io.groups.isEmpty, io.queued == tx.consumed, let position = tx.rewindIfEmpty() else { return }
        io.queued = position
    }

    /// Grows the kernel's share of the RX buffers when a turn's frames came
    /// near it (or ran it out), and halves it when bursts stayed under an
    /// eighth of it for `windowShrinkTurns` turns (between the two, a steady
    /// load keeps its window): under a light load a few buffers cycle and
    /// stay warm, a burst soon gets them all.
    private func adaptWindow() {
        let produced = rx.produced
        let burst = produced &- io.producedAtLastTurn
        io.producedAtLastTurn = produced
        if (burst * 2 >= io.window || io.exhausted) && io.window < rx.capacity {
            io.window = min(rx.capacity, io.window * 2)
            io.largestBurst = 0
            io.turnsSinceShrink = 0
        }
        io.exhausted = false
        io.largestBurst = max(io.largestBurst, burst)
        io.turnsSinceShrink += 1
        if io.turnsSinceShrink >= Self.windowShrinkTurns {
            if io.largestBurst * 8 < io.window && io.window > Self.minimumWindow { io.window /= 2 }
            io.largestBurst = 0
            io.turnsSinceShrink = 0
        }
    }

    /// Gives the kernel free RX buffers, the most recently freed first, up
    /// to `window` unfilled; each goes to the RX position it will fill.
    private func provideBuffers(_ ring: OpaquePointer) {
        let count = min(io.window - (io.recycled &- rx.produced), io.freeBuffers.count)
        guard count > 0 else { return }
        for index in 0..<count {
            let buffer = io.freeBuffers.removeLast()
            rx.assign(buffer: Int(buffer), to: io.recycled &+ index)
            io.provideList![index] = buffer
        }
        ctun_ring_provide(ring, io.provideList, UInt32(count))
        io.recycled &+= count
    }

    /// Queues writes: first those to try again, then the TX ring's new
    /// frames, runs of one flow as one. Returns how many were queued. Only
    /// once the last chain of writes completed: a new chain must not
    /// overtake the rest of one still in progress.
    private func queueWrites(_ ring: OpaquePointer) -> Int {
        guard !io.transmitBlocked, !io.groups.contains(where: { if case .inFlight = $0.state { true } else { false } }) else { return 0 }
        // The groups to write: those to try again, then new ones.
        let end = tx.produced
        while io.queued != end && io.groups.count < Self.maximumGroups {
            io.groups.append(nextGroup(upTo: end))
            io.queued &+= io.groups[io.groups.count - 1].count
        }
        var pending = 0
        for group in io.groups { if case .toSubmit = group.state { pending += 1 } }
        var submitted = 0
        for index in io.groups.indices {
            guard case .toSubmit = io.groups[index].state else { continue }
            // Linked to the next one; the last of the chain is not.
            guard submitWrite(io.groups[index], ring, linked: submitted < pending - 1) else { break }
            io.groups[index].state = .inFlight(tag: io.nextTag &- 1)
            submitted += 1
        }
        return submitted
    }

    /// Queues one write for `group` with the next tag, linked to the next
    /// write queued (so a write the device puts off holds back the ones
    /// after it); false when the submission queue is full.
    private func submitWrite(_ group: WriteGroup, _ ring: OpaquePointer, linked: Bool) -> Bool {
        let tag = io.nextTag
        let slot = Int(tag % UInt64(Self.maximumGroups))
        let queued: Bool
        if group.coalesced {
            let iov = io.iovecs! + slot * (UDPSegmentation.maximumSegments + 1)
            prepareRun(group, slot: slot, iovecs: iov)
            queued = ctun_ring_writev(ring, iov, UInt32(group.count + 1), tag, linked ? 1 : 0) != 0
        } else {
            let (start, length) = singleWrite(at: group.first)
            queued = ctun_ring_write(ring, start, UInt32(length), tag, linked ? 1 : 0) != 0
        }
        if queued { io.nextTag &+= 1 }
        return queued
    }

    /// The next frames from `io.queued` that go out in one write: a run of
    /// one UDP flow when segmentation writes are on, else one frame.
    private func nextGroup(upTo end: Int) -> WriteGroup {
        let offset = io.queued &- tx.consumed
        guard coalescing.load(ordering: .relaxed), let first = tx.peekFrame(ahead: offset),
              first.checksum == .partial(start: UDPSegmentation.checksumStart, offset: UDPSegmentation.checksumOffset),
              let payload = UDPSegmentation.runPayloadLength(first.bytes) else {
            return WriteGroup(first: io.queued, count: 1, coalesced: false)
        }
        var count = 1
        var total = payload
        while count < UDPSegmentation.maximumSegments, io.queued &+ count != end,
              let next = tx.peekFrame(ahead: offset + count), next.checksum == first.checksum,
              UDPSegmentation.canFollow(first.bytes, with: next.bytes, at: count) {
            let size = next.bytes.count - UDPSegmentation.runHeaderLength
            guard total + size + IPv4Header.length + UDPHeader.length <= 0xFFFF else { break }
            total += size
            count += 1
            if size < payload { break }
        }
        return WriteGroup(first: io.queued, count: count, coalesced: count > 1)
    }

    /// The virtio header in the slot's headroom and the frame after it: one buffer.
    private func singleWrite(at position: Int) -> (UnsafeMutableRawPointer, Int) {
        let frame = tx.peekFrame(ahead: position &- tx.consumed)!
        let start = tx.slotStart(at: position)
        // TUN: the packet without the Ethernet header the stack wrote.
        if device.mode == .tun { return (start + EthernetHeader.length, max(frame.bytes.count - EthernetHeader.length, 0)) }
        guard device.offloads.virtioHeader else { return (start, frame.bytes.count) }
        VirtioNetHeader(for: frame.checksum).emit(into: start)
        return (start, VirtioNetHeader.length + frame.bytes.count)
    }

    /// Fills `iov` for a run: its header (built in header slot `slot`), then
    /// each datagram's payload.
    private func prepareRun(_ group: WriteGroup, slot: Int, iovecs iov: UnsafeMutablePointer<iovec>) {
        let offset = group.first &- tx.consumed
        var total = 0
        for index in 0..<group.count {
            let frame = tx.peekFrame(ahead: offset + index)!.bytes
            let payload = frame.count - UDPSegmentation.runHeaderLength
            iov[index + 1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: frame.baseAddress! + UDPSegmentation.runHeaderLength),
                                   iov_len: payload)
            total += payload
        }
        let header = UnsafeMutableRawBufferPointer(start: io.headers! + slot * Self.headerRoom, count: Self.headerRoom)
        let first = tx.peekFrame(ahead: offset)!.bytes
        iov[0] = iovec(iov_base: header.baseAddress, iov_len: UDPSegmentation.writeRunHeader(first: first, payloadBytes: total, into: header))
    }

    /// Records the result of write `tag`: written (counted, captured) or
    /// refused for good (dropped, counted); put off (EAGAIN), or a run the
    /// kernel refuses (segmentation writes are turned off and its frames go
    /// one by one), to be submitted again in its place.
    private func finishWrite(tag: UInt64, result: Int32) {
        guard let index = io.groups.firstIndex(where: { if case .inFlight(tag) = $0.state { true } else { false } }) else { return }
        let group = io.groups[index]
        if result >= 0 {
            accountWritten(group)
            io.groups[index].state = .done
        } else if result == -EAGAIN || result == -EINTR || result == -ENOBUFS || result == -ECANCELED {
            if result == -EAGAIN {
                counters.add(.txRetries)
                io.transmitBlocked = true
            }
            io.groups[index].state = .toSubmit
        } else if group.coalesced && (result == -EINVAL || result == -EOPNOTSUPP) {
            coalescing.store(false, ordering: .relaxed)
            counters.add(.txCoalescingRefused)
            let singles = (0..<group.count).map { WriteGroup(first: group.first &+ $0, count: 1, coalesced: false) }
            io.groups.replaceSubrange(index...index, with: singles)
        } else {
            counters.add(result == -EIO ? .txDropDown : .txErrors, UInt64(group.count))
            io.groups[index].state = .done
        }
    }

    /// Frees the TX slots of the writes done, oldest first (a write still
    /// to do holds back the ones after it: the ring releases in order).
    private func releaseWritten() {
        var done = 0
        var frames = 0
        while done < io.groups.count, case .done = io.groups[done].state {
            frames += io.groups[done].count
            done += 1
        }
        guard done > 0 else { return }
        tx.release(count: frames)
        io.groups.removeFirst(done)
    }

    /// Counts, captures and shows the frames of a write the device took.
    private func accountWritten(_ group: WriteGroup) {
        let offset = group.first &- tx.consumed
        if group.coalesced {
            counters.add(.txCoalescedWrites)
            counters.add(.txCoalescedSegments, UInt64(group.count))
        }
        counters.add(.txFrames, UInt64(group.count))
        for index in 0..<group.count {
            let frame = tx.peekFrame(ahead: offset + index)!
            counters.add(.txBytes, UInt64(frame.bytes.count))
            capture?.record(frame.bytes, checksum: frame.checksum, direction: .outbound)
            observer?(.outbound, frame.bytes)
        }
    }

    // MARK: Without io_uring

    private func exchangeDirectly(waitUntil deadline: UInt64?, now: UInt64) {
        writeDirectly()
        guard let deadline, readDirectly() == 0 else { return }
        var timeout: Int32 = -1
        if deadline != .max {
            guard deadline > now else { return }
            timeout = Int32(clamping: (deadline - now + 999_999) / 1_000_000)
        }
        counters.add(.sleeps)
        let count = 2 + io.watches.count
        if io.pollSet.count != count { io.pollSet = Array(repeating: pollfd(), count: count) }
        io.pollSet[0] = pollfd(fd: device.fd, events: Int16(io.freeBuffers.isEmpty ? 0 : POLLIN) | Int16(io.transmitBlocked ? POLLOUT : 0), revents: 0)
        io.pollSet[1] = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
        for (index, watch) in io.watches.enumerated() { io.pollSet[2 + index] = pollfd(fd: watch.fd, events: Int16(POLLIN), revents: 0) }
        _ = poll(&io.pollSet, nfds_t(count), timeout)
        for index in 1..<count where io.pollSet[index].revents != 0 {
            csys_eventfd_drain(io.pollSet[index].fd)
            counters.add(.wakeups)
            if index >= 2 { io.fired.append(io.pollSet[index].fd) }
        }
        if io.pollSet[0].revents & Int16(POLLOUT) != 0 { io.transmitBlocked = false }
        _ = readDirectly()
    }

    /// Reads what the device holds into free RX slots; returns how many.
    private func readDirectly() -> Int {
        var count = 0
        while count < 64, !rx.isFull, let buffer = io.freeBuffers.popLast() {
            let tun = device.mode == .tun ? EthernetHeader.length : 0
            rx.assign(buffer: Int(buffer), to: rx.produced)
            let n = read(device.fd, rx.slotStart(at: rx.produced) + tun, rx.headroom + rx.slotSize - tun)
            if n < 0 {
                io.freeBuffers.append(buffer)
                if errno == EINTR { continue }
                if errno != EAGAIN { counters.add(.rxErrors) }
                break
            }
            publishReceived(length: n)
            count += 1
        }
        return count
    }

    /// Writes the TX ring's frames one write (or run) at a time.
    private func writeDirectly() {
        if io.transmitBlocked {
            var fd = pollfd(fd: device.fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&fd, 1, 0) > 0 else { return }
            io.transmitBlocked = false
        }
        io.queued = tx.consumed
        let end = tx.produced
        while tx.consumed != end {
            let group = nextGroup(upTo: end)
            let result: Int
            if group.coalesced {
                prepareRun(group, slot: 0, iovecs: io.iovecs!)
                result = writev(device.fd, io.iovecs!, Int32(group.count + 1))
            } else {
                let (start, length) = singleWrite(at: group.first)
                result = write(device.fd, start, length)
            }
            if result < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN {
                    counters.add(.txRetries)
                    io.transmitBlocked = true
                    return
                }
                if group.coalesced && (errno == EINVAL || errno == EOPNOTSUPP) {
                    coalescing.store(false, ordering: .relaxed)
                    counters.add(.txCoalescingRefused)
                    continue
                }
                counters.add(errno == EIO ? .txDropDown : .txErrors, UInt64(group.count))
            } else {
                accountWritten(group)
            }
            tx.release(count: group.count)
            io.queued = tx.consumed
        }
    }

    // MARK: Receiving

    /// Publishes the frame the device just put in the next RX slot
    /// (`length` bytes with the virtio header): its checksum completed if
    /// the kernel left it partial, a GSO frame marked for cutting. A frame
    /// that cannot be used is published empty (the slot must still be
    /// consumed in order), counted here, and skipped by `receive`.
    private func publishReceived(length: Int) {
        let start = rx.slotStart(at: rx.produced)
        counters.add(.rxFrames)
        if device.mode == .tun {
            // An IP packet: give the stack the frame it expects, behind an
            // Ethernet header with no addresses and the packet's version's type.
            let version = length > 0 ? (start + EthernetHeader.length).load(as: UInt8.self) >> 4 : 0
            EthernetHeader(destination: .zero, source: .zero, etherType: version == 6 ? .ipv6 : .ipv4)
                .emit(into: UnsafeMutableRawBufferPointer(start: start, count: EthernetHeader.length))
            counters.add(.rxBytes, UInt64(length))
            rx.commit(length: min(length + EthernetHeader.length, rx.slotSize))
            return
        }
        guard device.offloads.virtioHeader else {
            counters.add(.rxBytes, UInt64(length))
            rx.commit(length: min(length, rx.slotSize))
            return
        }
        guard let header = VirtioNetHeader(UnsafeRawBufferPointer(start: start, count: length)) else {
            counters.add(.rxDropBadVirtioHeader)
            rx.commit(length: 0)
            return
        }
        let frameLength = min(length - VirtioNetHeader.length, rx.slotSize)
        counters.add(.rxBytes, UInt64(frameLength))
        if header.gsoType != VirtioNetHeader.GSOType.none {
            guard header.gsoType & ~VirtioNetHeader.GSOType.ecn == VirtioNetHeader.GSOType.udpL4, header.gsoSize > 0 else {
                counters.add(.rxDropBadSegmentation)
                rx.commit(length: 0)
                return
            }
            rx.commit(length: frameLength, segmentSize: Int(header.gsoSize))
            return
        }
        var checksum = ChecksumOffload.none
        if header.flags & VirtioNetHeader.needsChecksum != 0 {
            guard Int(header.checksumStart) + Int(header.checksumOffset) + 2 <= frameLength else {
                counters.add(.rxDropBadVirtioHeader)
                rx.commit(length: 0)
                return
            }
            counters.add(.rxChecksumsPartial)
            checksum = .verified(start: header.checksumStart, offset: header.checksumOffset)
        }
        rx.commit(length: frameLength, checksum: checksum)
    }

    /// Why the stack dropped the frame being handled (an index into the
    /// capture's reason names), or -1. Executor thread only.
    @exclusivity(unchecked) nonisolated(unsafe) private var dropReason = -1

    /// Notes that the stack dropped the frame it is handling now, for the
    /// capture's comment on it. Called from the stack's `onDrop`, on the
    /// executor thread, while `receive` hands it the frame.
    public func noteDrop(reason: Int) { dropReason = reason }

    public func receive(upTo limit: Int, _ handle: (UnsafeRawBufferPointer, ChecksumOffload) -> Void) -> Int {
        var count = 0
        while count < limit, let frame = rx.peekFrame() {
            count += 1
            if frame.segmentSize > 0 {
                receiveSegments(of: frame, handle)
            } else if frame.bytes.count > 0 {
                observer?(.inbound, frame.bytes)
                // Captured after the stack handled it, so that the reason it
                // dropped the frame (if it did) goes with it.
                dropReason = -1
                handle(frame.bytes, frame.checksum)
                if let capture {
                    // A field the kernel left partial is shown complete.
                    if case .verified(let start, let offset) = frame.checksum {
                        capture.record(frame.bytes, checksum: .partial(start: start, offset: offset), direction: .inbound,
                                       dropReason: dropReason)
                    } else {
                        capture.record(frame.bytes, direction: .inbound, dropReason: dropReason)
                    }
                }
            }
            io.freeBuffers.append(UInt16(rx.buffer(at: rx.consumed)))
            rx.release()
        }
        return count
    }

    /// Hands the datagrams of a GSO frame to the core one by one, each as
    /// the frame it would have been without segmentation.
    private func receiveSegments(of frame: RingFrame, _ handle: (UnsafeRawBufferPointer, ChecksumOffload) -> Void) {
        guard let count = UDPSegmentation.segmentCount(of: frame.bytes, segmentSize: frame.segmentSize) else {
            counters.add(.rxDropBadSegmentation)
            return
        }
        counters.add(.rxSegmentedFrames)
        let scratch = io.segment!
        let version = frame.bytes[EthernetHeader.length] >> 4
        let start = UInt16(EthernetHeader.length + (version == 6 ? IPv6Header.length : Int(frame.bytes[EthernetHeader.length] & 0x0F) * 4))
        for index in 0..<count {
            guard let length = UDPSegmentation.writeSegment(index, of: frame.bytes, segmentSize: frame.segmentSize, into: scratch) else {
                counters.add(.rxDropBadSegmentation)
                return
            }
            counters.add(.rxSegments)
            let segment = UnsafeRawBufferPointer(rebasing: scratch[0..<length])
            observer?(.inbound, segment)
            dropReason = -1
            handle(segment, .verified(start: start, offset: UInt16(UDPDatagramView.Field.checksum)))
            capture?.record(segment, direction: .inbound, dropReason: dropReason)
        }
    }
}
