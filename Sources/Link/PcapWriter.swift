import CPcap
import SocketAPI
import Wire
import Glibc

/// The file format of a capture.
public enum CaptureFormat: String, Sendable, CaseIterable {
    /// Classic pcap (libpcap's own): every tool reads it; no direction, no comments.
    case pcap
    /// pcapng: the interface's name, address and MAC, each frame's direction,
    /// and the stack's drop reason as a comment on the frame it dropped.
    case pcapng

    /// pcapng for a name ending in `.pcapng`, else pcap.
    public static func forPath(_ path: String) -> CaptureFormat { path.hasSuffix(".pcapng") ? .pcapng : .pcap }
}

/// Writes frames to a capture file (link type Ethernet, microsecond
/// timestamps): classic pcap through libpcap, or pcapng (`PcapngFormat`),
/// optionally keeping only those a tcpdump filter matches.
///
/// Not thread-safe: one thread writes (the capture thread).
public final class PcapWriter {
    public enum Error: Swift.Error, CustomStringConvertible {
        case cannotOpen(path: String, reason: String)
        case badFilter(expression: String, reason: String)

        public var description: String {
            switch self {
            case .cannotOpen(let path, let reason): "cannot open pcap file '\(path)': \(reason)"
            case .badFilter(let expression, let reason): "bad --pcap-filter '\(expression)': \(reason)"
            }
        }
    }

    private var pcap: OpaquePointer?
    private var dumper: OpaquePointer?
    /// The pcapng file; nil for classic pcap.
    private var file: UnsafeMutablePointer<FILE>?
    public let format: CaptureFormat
    private var filter = bpf_program()
    private var hasFilter = false
    public let snapLength: Int
    /// Frames are written without their first 14 bytes (see `init`'s `rawIP`).
    public let rawIP: Bool
    /// Frames written.
    public private(set) var framesWritten = 0
    /// Frames the filter rejected.
    public private(set) var framesFiltered = 0

    /// Opens `path` for writing ("-" is standard output).
    /// - Parameters:
    ///   - snapLength: bytes kept of each frame (its full length is recorded too).
    ///   - filter: a tcpdump expression; frames it does not match are not written.
    ///   - format: pcap or pcapng.
    ///   - interface: what pcapng's interface description says (ignored for pcap).
    ///   - rawIP: record IP packets without their Ethernet header (LINKTYPE_RAW),
    ///     as a TUN device carries them; the filter then applies to IP.
    public init(path: String, snapLength: Int = 65535, filter expression: String? = nil,
                format: CaptureFormat = .pcap, interface: PcapngFormat.Interface? = nil, rawIP: Bool = false) throws(Error) {
        self.snapLength = snapLength
        self.format = format
        self.rawIP = rawIP
        guard let pcap = pcap_open_dead(rawIP ? DLT_RAW : DLT_EN10MB, Int32(snapLength)) else {
            throw .cannotOpen(path: path, reason: "pcap_open_dead failed")
        }
        self.pcap = pcap
        if let expression {
            guard pcap_compile(pcap, &filter, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
                let reason = String(cString: pcap_geterr(pcap))
                pcap_close(pcap)
                self.pcap = nil
                throw .badFilter(expression: expression, reason: reason)
            }
            hasFilter = true
        }
        if format == .pcapng {
            guard let file = path == "-" ? fdopen(dup(1), "w") : fopen(path, "w") else {
                let reason = String(cString: strerror(errno))
                close()
                throw .cannotOpen(path: path, reason: reason)
            }
            self.file = file
            let interface = interface ?? PcapngFormat.Interface(name: "tap", description: "tapstack")
            put(PcapngFormat.sectionHeader(application: "tapstack \(TapstackVersion.current)")
                + PcapngFormat.interfaceDescription(interface, snapLength: snapLength, rawIP: rawIP))
            return
        }
        guard let dumper = pcap_dump_open(pcap, path) else {
            let reason = String(cString: pcap_geterr(pcap))
            close()
            throw .cannotOpen(path: path, reason: reason)
        }
        self.dumper = dumper
    }

    private func put(_ bytes: [UInt8]) {
        guard let file else { return }
        if fwrite(bytes, 1, bytes.count, file) != bytes.count { hasFailed = true }
    }

    deinit { close() }

    /// Appends one frame with the current wall-clock time.
    public func write(_ frame: UnsafeRawBufferPointer) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        write(frame, originalLength: frame.count, seconds: Int(now.tv_sec), microseconds: Int(now.tv_nsec / 1000))
    }

    /// Appends one frame (`frame` may already be cut to the snap length;
    /// `originalLength` is its length on the wire). pcapng records its
    /// direction and `comment`; classic pcap has no place for either.
    /// Returns false if the filter rejected it.
    @discardableResult
    public func write(_ frame: UnsafeRawBufferPointer, originalLength: Int, seconds: Int, microseconds: Int,
                      direction: FrameDirection? = nil, comment: String? = nil) -> Bool {
        var frame = frame
        var originalLength = originalLength
        if rawIP {
            frame = UnsafeRawBufferPointer(rebasing: frame[min(EthernetHeader.length, frame.count)...])
            originalLength = max(originalLength - EthernetHeader.length, frame.count)
        }
        guard dumper != nil || file != nil, !hasFailed, let base = frame.baseAddress else { return false }
        var header = pcap_pkthdr()
        header.ts.tv_sec = seconds
        header.ts.tv_usec = microseconds
        header.caplen = bpf_u_int32(min(frame.count, snapLength))
        header.len = bpf_u_int32(max(originalLength, frame.count))
        let bytes = base.assumingMemoryBound(to: UInt8.self)
        if hasFilter, pcap_offline_filter(&filter, &header, bytes) == 0 {
            framesFiltered += 1
            return false
        }
        if let dumper {
            pcap_dump(UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self), &header, bytes)
        } else {
            let kept = UnsafeRawBufferPointer(rebasing: frame[0..<Int(header.caplen)])
            put(PcapngFormat.enhancedPacket(kept, originalLength: Int(header.len),
                                            microseconds: UInt64(seconds) * 1_000_000 + UInt64(microseconds),
                                            direction: direction, comment: comment))
        }
        framesWritten += 1
        return true
    }

    /// True once a write failed (a full disk, a reader that went away); later frames are not written.
    public private(set) var hasFailed = false

    /// Pushes buffered frames to the file.
    public func flush() {
        if let file, fflush(file) != 0 || ferror(file) != 0 { hasFailed = true }
        guard let dumper else { return }
        if pcap_dump_flush(dumper) != 0 || ferror(pcap_dump_file(dumper)) != 0 { hasFailed = true }
    }

    /// Flushes and closes the file. Idempotent.
    public func close() {
        if let dumper { pcap_dump_flush(dumper); pcap_dump_close(dumper) }
        if let file { fclose(file) }
        file = nil
        if hasFilter { pcap_freecode(&filter) }
        hasFilter = false
        if let pcap { pcap_close(pcap) }
        dumper = nil
        pcap = nil
    }
}

/// Reads the frames of a pcap file through libpcap.
public final class PcapReader {
    public struct Frame: Sendable {
        public var bytes: [UInt8]
        /// Capture time in nanoseconds since the Unix epoch.
        public var timestampNanoseconds: UInt64
        /// Length on the wire (may exceed `bytes.count` when the capture was cut short).
        public var originalLength: Int
    }

    private let handle: OpaquePointer
    /// The file's link type (DLT_EN10MB for Ethernet).
    public let linkType: Int32

    /// Opens `path` ("-" is standard input).
    /// - Throws: `PcapWriter.Error.cannotOpen` with libpcap's reason.
    public init(path: String) throws(PcapWriter.Error) {
        var error = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let handle = pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &error) else {
            throw .cannotOpen(path: path, reason: error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        self.handle = handle
        linkType = pcap_datalink(handle)
    }

    deinit { pcap_close(handle) }

    /// The next frame, or nil at the end of the file.
    public func next() -> Frame? {
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        guard pcap_next_ex(handle, &header, &data) == 1, let header, let data else { return nil }
        let h = header.pointee
        return Frame(bytes: Array(UnsafeBufferPointer(start: data, count: Int(h.caplen))),
                     timestampNanoseconds: UInt64(h.ts.tv_sec) * 1_000_000_000 + UInt64(h.ts.tv_usec),
                     originalLength: Int(h.len))
    }
}
