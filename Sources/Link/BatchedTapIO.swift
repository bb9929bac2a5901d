import CTun
import Glibc

/// TAP reads and writes gathered into one io_uring submission: a batch of
/// frames costs one system call instead of one per frame. Every operation is
/// non-blocking (a read with nothing waiting fails at once with EAGAIN).
/// Used by the driver thread only, and only on the thread that created it.
final class BatchedTapIO {
    /// Operations per batch at most.
    let capacity: Int
    private let batch: OpaquePointer
    private let results: UnsafeMutablePointer<Int32>
    private var queued = 0

    /// Throws the errno when the kernel refuses io_uring (too old,
    /// disabled by `kernel.io_uring_disabled`, or filtered by seccomp).
    init(fd: Int32, capacity: Int) throws(Errno) {
        var err: Int32 = 0
        guard let batch = ctun_batch_open(fd, UInt32(capacity), &err) else { throw Errno(err) }
        self.batch = batch
        self.capacity = capacity
        results = .allocate(capacity: capacity)
        results.initialize(repeating: 0, count: capacity)
    }

    deinit {
        ctun_batch_close(batch)
        results.deallocate()
    }

    /// Queues a read into `buffer`; returns its index for `result(_:)`.
    @inline(__always)
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(queued < capacity)
        _ = ctun_batch_read(batch, buffer.baseAddress, UInt32(buffer.count), UInt32(queued))
        queued += 1
        return queued - 1
    }

    /// Queues a write of `frame`; returns its index for `result(_:)`.
    @inline(__always)
    func write(_ frame: UnsafeRawBufferPointer) -> Int {
        precondition(queued < capacity)
        _ = ctun_batch_write(batch, frame.baseAddress, UInt32(frame.count), UInt32(queued))
        queued += 1
        return queued - 1
    }

    /// Submits what is queued and waits for all of it (never for traffic).
    /// Throws when the submission failed; operations not carried out then
    /// have the result -ECANCELED.
    func run() throws(Errno) {
        let status = ctun_batch_run(batch, results)
        queued = 0
        if status < 0 { throw Errno(-status) }
    }

    /// Bytes moved by operation `index` of the last `run`, or -errno.
    @inline(__always)
    func result(_ index: Int) -> Int { Int(results[index]) }
}

/// An errno value as a Swift error.
struct Errno: Error, CustomStringConvertible {
    let code: Int32
    init(_ code: Int32) { self.code = code }
    var description: String { String(cString: strerror(code)) }
}
