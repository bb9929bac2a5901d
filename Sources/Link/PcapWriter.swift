import CPcap
import Glibc

/// Which way a captured frame crossed the link.
public enum FrameDirection: Sendable {
    case inbound
    case outbound
}

/// Writes frames to a pcap file (link type Ethernet) through libpcap.
///
/// Not thread-safe: one thread writes (the driver thread); `close` after it stopped.
public final class PcapWriter {
    public enum Error: Swift.Error, CustomStringConvertible {
        case cannotOpen(path: String, reason: String)
        public var description: String {
            switch self {
            case .cannotOpen(let path, let reason): "cannot open pcap file '\(path)': \(reason)"
            }
        }
    }

    private var pcap: OpaquePointer?
    private var dumper: OpaquePointer?
    public let snapLength: Int
    /// Frames written.
    public private(set) var framesWritten = 0

    /// Opens `path` for writing ("-" is standard output).
    public init(path: String, snapLength: Int = 65535) throws(Error) {
        self.snapLength = snapLength
        guard let pcap = pcap_open_dead(DLT_EN10MB, Int32(snapLength)) else {
            throw .cannotOpen(path: path, reason: "pcap_open_dead failed")
        }
        guard let dumper = pcap_dump_open(pcap, path) else {
            let reason = String(cString: pcap_geterr(pcap))
            pcap_close(pcap)
            throw .cannotOpen(path: path, reason: reason)
        }
        self.pcap = pcap
        self.dumper = dumper
    }

    deinit { close() }

    /// Appends one frame with the current wall-clock time.
    public func write(_ frame: UnsafeRawBufferPointer) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        write(frame, seconds: Int(now.tv_sec), microseconds: Int(now.tv_nsec / 1000))
    }

    /// Appends one frame with the given timestamp.
    public func write(_ frame: UnsafeRawBufferPointer, seconds: Int, microseconds: Int) {
        guard let dumper, let base = frame.baseAddress else { return }
        var header = pcap_pkthdr()
        header.ts.tv_sec = seconds
        header.ts.tv_usec = microseconds
        header.caplen = bpf_u_int32(min(frame.count, snapLength))
        header.len = bpf_u_int32(frame.count)
        pcap_dump(UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self), &header,
                  base.assumingMemoryBound(to: UInt8.self))
        framesWritten += 1
    }

    /// Pushes buffered frames to the file.
    public func flush() {
        if let dumper { pcap_dump_flush(dumper) }
    }

    /// Flushes and closes the file. Idempotent.
    public func close() {
        if let dumper { pcap_dump_flush(dumper); pcap_dump_close(dumper) }
        if let pcap { pcap_close(pcap) }
        dumper = nil
        pcap = nil
    }
}
