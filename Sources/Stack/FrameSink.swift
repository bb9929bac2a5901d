import Wire

/// Where the core writes the frames it sends: a buffer per frame, filled in
/// place, then committed. The TX ring is one; a test collector is another.
public protocol FrameSink: AnyObject {
    /// A buffer for one outgoing frame, or nil when the link cannot take more now.
    func reserveFrame() -> UnsafeMutableRawBufferPointer?
    /// Publishes the frame last reserved, `length` bytes long; `checksum`
    /// is `.partial` when the frame leaves its transport checksum to the link.
    func commitFrame(length: Int, checksum: ChecksumOffload)
    /// True when the link completes checksums left partial (a TAP device
    /// with a virtio-net header): the core then leaves UDP checksums to it.
    var completesChecksums: Bool { get }
    /// The largest frame a reserved buffer holds (the MTU must fit it).
    var maximumFrameLength: Int { get }
    /// True when `frames` frames can be reserved now (for all-or-nothing
    /// fragment trains). When false, the sink remembers that the stack waits
    /// for room, so the link can say when it has some.
    func hasRoom(for frames: Int) -> Bool
}

/// A sink that keeps every frame in memory: for tests and replay.
public final class CollectingSink: FrameSink {
    public private(set) var frames: [[UInt8]] = []
    /// What each frame of `frames` left to the link (`.partial` only when `completesChecksums`).
    public private(set) var checksums: [ChecksumOffload] = []
    /// When set, at most this many frames are accepted (to test a full link).
    public var limit: Int?
    /// Whether the core may leave UDP checksums partial in the frames it sends here.
    public var completesChecksums: Bool
    private let scratch: UnsafeMutableRawBufferPointer
    public let maximumFrameLength: Int

    public init(maximumFrameLength: Int = 1514, completesChecksums: Bool = false) {
        scratch = .allocate(byteCount: maximumFrameLength, alignment: 16)
        self.maximumFrameLength = maximumFrameLength
        self.completesChecksums = completesChecksums
    }

    deinit { scratch.deallocate() }

    public func reserveFrame() -> UnsafeMutableRawBufferPointer? {
        if let limit, frames.count >= limit { return nil }
        return scratch
    }

    public func commitFrame(length: Int, checksum: ChecksumOffload) {
        frames.append(Array(scratch[0..<length]))
        checksums.append(checksum)
    }

    public func hasRoom(for count: Int) -> Bool { limit.map { $0 - frames.count >= count } ?? true }

    /// Returns and forgets the frames collected so far.
    public func take() -> [[UInt8]] {
        defer { frames.removeAll(); checksums.removeAll() }
        return frames
    }
}
