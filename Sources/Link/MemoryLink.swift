import CTapstackSystem
import Glibc
import SocketAPI
import Synchronization
import Wire

/// A link with no device: the test plays the wire, injecting frames into the
/// stack and collecting what the stack transmits.
///
/// The test thread is the only producer of `rx` and the only consumer of `tx`.
public final class MemoryLink: LinkEndpoint {
    /// Frames the test injects for the stack.
    public let rx: FrameRing
    /// Frames the stack sent, for the test to take.
    public let tx: FrameRing
    /// The largest frame either ring carries.
    public let maximumFrameLength: Int
    /// Whether the stack may leave UDP checksums partial here (a test of the offload path).
    public let completesChecksums: Bool
    /// Ends the executor's sleep: injected frames, freed TX slots, `wake`.
    private let wakeup = Wakeup()
    /// Signalled whenever the stack transmitted (the executor's exchange ran with frames queued).
    private let transmitted = Wakeup()

    /// A link with rings of `capacity` frames; `watchesDescriptors` false
    /// plays a link that cannot watch a source's descriptor.
    public init(capacity: Int = 256, maximumFrameLength: Int = 1514, completesChecksums: Bool = false,
                watchesDescriptors: Bool = true) {
        self.watchesDescriptors = watchesDescriptors
        self.maximumFrameLength = maximumFrameLength
        self.completesChecksums = completesChecksums
        rx = FrameRing(capacity: capacity, slotSize: maximumFrameLength)
        tx = FrameRing(capacity: capacity, slotSize: maximumFrameLength)
    }

    public func open() {}

    /// Up unless a test says otherwise (`up`).
    public var isUp: Bool { up.load(ordering: .sequentiallyConsistent) }
    /// Whether the link counts as up; a test may start it down.
    public let up = Atomic<Bool>(true)

    public func close() {}

    public func receive(upTo limit: Int, _ handle: (UnsafeRawBufferPointer, ChecksumOffload) -> Void) -> Int {
        var count = 0
        while count < limit, let frame = rx.peekFrame() {
            handle(frame.bytes, frame.checksum)
            rx.release()
            count += 1
        }
        return count
    }

    public func exchange(waitUntil deadline: UInt64?) {
        if !tx.isEmpty { transmitted.signal() }
        guard let deadline else { return }
        let now = monotonicNanoseconds()
        guard deadline > now else { return }
        let timeout = deadline == .max ? -1 : Int32(clamping: (deadline - now + 999_999) / 1_000_000)
        guard !watched.isEmpty else {
            wakeup.wait(timeoutMilliseconds: timeout) { !rx.isEmpty }
            return
        }
        guard wakeup.beginSleep(unless: { !rx.isEmpty }) else { return }
        var fds = [pollfd(fd: wakeup.fd, events: Int16(POLLIN), revents: 0)]
        fds += watched.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        _ = poll(&fds, nfds_t(fds.count), timeout)
        wakeup.endSleep()
        for entry in fds.dropFirst() where entry.revents != 0 {
            csys_eventfd_drain(entry.fd)
            fired.append(entry.fd)
        }
    }

    public func wake() { wakeup.forceSignal() }

    /// Descriptors that also end a sleep; the executor's thread only.
    nonisolated(unsafe) private var watched: [Int32] = []
    public let watchesDescriptors: Bool
    public func watch(_ descriptor: Int32) { if watchesDescriptors { watched.append(descriptor) } }
    public func unwatch(_ descriptor: Int32) { watched.removeAll { $0 == descriptor } }
    nonisolated(unsafe) private var fired: [Int32] = []
    public func takeFiredDescriptors(_ handle: (Int32) -> Void) {
        for descriptor in fired { handle(descriptor) }
        fired.removeAll(keepingCapacity: true)
    }

    /// Delivers a frame to the stack; false when the RX ring is full.
    @discardableResult
    public func inject(_ frame: [UInt8], checksum: ChecksumOffload = .none) -> Bool {
        let ok = frame.withUnsafeBytes { rx.push($0, checksum: checksum) }
        wakeup.signal()
        return ok
    }

    /// Takes the oldest transmitted frame, waiting up to `timeoutMilliseconds`.
    public func nextTransmitted(timeoutMilliseconds: Int32 = 1000) -> [UInt8]? {
        nextTransmittedFrame(timeoutMilliseconds: timeoutMilliseconds)?.bytes
    }

    /// Like `nextTransmitted`, with the checksum the stack left to the link.
    public func nextTransmittedFrame(timeoutMilliseconds: Int32 = 1000) -> (bytes: [UInt8], checksum: ChecksumOffload)? {
        let deadline = monotonicNanoseconds() + UInt64(max(0, timeoutMilliseconds)) * 1_000_000
        while true {
            if let frame = tx.peekFrame() {
                let taken = (Array(frame.bytes), frame.checksum)
                tx.release()
                // A sender waits for room: the executor tells it, on its next turn.
                if tx.takeProducerWaiting() { wakeup.forceSignal() }
                return taken
            }
            let now = monotonicNanoseconds()
            guard now < deadline else { return nil }
            transmitted.wait(timeoutMilliseconds: Int32(clamping: (deadline - now + 999_999) / 1_000_000)) { !tx.isEmpty }
        }
    }
}
