import Wire

/// What the executor needs from a link: the SPSC FIFO pair that is the
/// boundary between device I/O and the stack core, and device I/O turns.
///
/// The device side produces into `rx` and consumes `tx`; the core consumes
/// `rx` (through `receive`) and produces into `tx`. Device I/O (`open`,
/// `exchange`, `close`) runs on one thread, the executor's, which calls
/// `receive` too; `wake` may be called from any thread.
public protocol LinkEndpoint: AnyObject, Sendable {
    /// Frames from the wire to the stack.
    var rx: FrameRing { get }
    /// Frames from the stack to the wire.
    var tx: FrameRing { get }
    /// Largest frame the link carries (without FCS).
    var maximumFrameLength: Int { get }
    /// True when the link completes transport checksums that frames in `tx`
    /// leave partial (`ChecksumOffload.partial`). Fixed once `open` returned.
    var completesChecksums: Bool { get }

    /// Prepares device I/O on the calling thread, which alone calls
    /// `exchange`, `receive`, `isUp` and `close` afterwards.
    func open()

    /// True when the interface takes frames (a TAP device refuses them with
    /// EIO until the kernel side is up): the stack announces itself only then.
    var isUp: Bool { get }

    /// Hands up to `limit` received frames to `handle`, oldest first, with
    /// what the link did to each one's checksum, and frees their slots.
    /// Returns how many frames `rx` gave up (a frame the link splits counts once).
    func receive(upTo limit: Int, _ handle: (UnsafeRawBufferPointer, ChecksumOffload) -> Void) -> Int

    /// One device I/O turn: writes what `tx` holds, takes back the slots
    /// `receive` freed, and publishes into `rx` what the device has read.
    /// With `waitUntil` (a monotonic time in nanoseconds, `.max` for no
    /// limit) it sleeps, once the writes are out, until a frame arrives, `wake`
    /// is called, or that time; with nil it never sleeps.
    func exchange(waitUntil deadline: UInt64?)

    /// `exchange(waitUntil:)` for a caller that read the monotonic clock at
    /// the start of its turn (`now`, nanoseconds): the sleep until
    /// `deadline` is measured from that reading, sparing a clock read per
    /// turn; it ends late by the turn's length at most, never early. The
    /// default reads the clock.
    func exchange(waitUntil deadline: UInt64?, now: UInt64)

    /// Sends what is left in `tx` and releases device I/O; after `open`.
    func close()

    /// Ends a sleep in `exchange` now, or makes the next one return at once.
    /// Any thread; never blocks.
    func wake()

    /// Whether `watch` works on this link (false by default).
    var watchesDescriptors: Bool { get }

    /// Also ends a sleep in `exchange` whenever the eventfd `descriptor` is
    /// written: the doorbell of a process the stack serves, which can then
    /// wake the executor without a thread in between. The link may drain
    /// it. Call on the thread that runs `exchange`, as long as the
    /// descriptor stays open; `unwatch` before closing it.
    func watch(_ descriptor: Int32)

    /// Stops watching `descriptor`. The thread that runs `exchange` only.
    func unwatch(_ descriptor: Int32)

    /// Calls `handle` with each watched descriptor that fired since the
    /// last call, and forgets them. The thread that runs `exchange` only.
    func takeFiredDescriptors(_ handle: (Int32) -> Void)

    /// With `tx` empty and no write of the link's in progress, moves the
    /// ring's next slot back to its first one (see `FrameRing.rewindIfEmpty`).
    /// Call on the thread that runs `exchange`, while no frame is being
    /// produced (holding what producers hold).
    func rewindTransmitRing()
}

extension LinkEndpoint {
    public var watchesDescriptors: Bool { false }
    public func watch(_ descriptor: Int32) {}
    public func unwatch(_ descriptor: Int32) {}
    public func takeFiredDescriptors(_ handle: (Int32) -> Void) {}
    public func rewindTransmitRing() {}
    public func exchange(waitUntil deadline: UInt64?, now: UInt64) { exchange(waitUntil: deadline) }
}
