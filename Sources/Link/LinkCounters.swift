import Synchronization

/// What a TAP link did, counted by its I/O thread; readable from any thread.
public final class LinkCounters: Sendable {
    /// One counter of the link.
    public enum Counter: Int, CaseIterable, Sendable {
        case rxFrames, rxBytes, rxErrors, rxDropBadVirtioHeader, rxChecksumsPartial
        case rxSegmentedFrames, rxSegments, rxDropBadSegmentation, rxBufferExhausted
        case txFrames, txBytes, txErrors, txDropDown, txRetries, txCoalescedWrites, txCoalescedSegments, txCoalescingRefused
        case ioUringEnters, sleeps, wakeups, polls

        /// The name shown with the other counters (`link.` and the reason).
        public var name: String {
            switch self {
            case .rxFrames: "link.rx_frames"
            case .rxBytes: "link.rx_bytes"
            case .rxErrors: "link.rx_errors"
            case .rxDropBadVirtioHeader: "link.rx_drop_bad_virtio_header"
            case .rxChecksumsPartial: "link.rx_checksums_partial"
            case .rxSegmentedFrames: "link.rx_segmented_frames"
            case .rxSegments: "link.rx_segments"
            case .rxDropBadSegmentation: "link.rx_drop_bad_segmentation"
            case .rxBufferExhausted: "link.rx_buffers_exhausted"
            case .txFrames: "link.tx_frames"
            case .txBytes: "link.tx_bytes"
            case .txErrors: "link.tx_errors"
            case .txDropDown: "link.tx_drop_down"
            case .txRetries: "link.tx_retries"
            case .txCoalescedWrites: "link.tx_coalesced_writes"
            case .txCoalescedSegments: "link.tx_coalesced_segments"
            case .txCoalescingRefused: "link.tx_coalescing_refused"
            case .ioUringEnters: "link.io_uring_enters"
            case .sleeps: "link.sleeps"
            case .wakeups: "link.wakeups"
            case .polls: "link.polls"
            }
        }

        /// What it counts, for `--help`-like listings and the README.
        public var meaning: String {
            switch self {
            case .rxFrames: "frames read from the device (a segmented frame counts once)"
            case .rxBytes: "bytes of those frames"
            case .rxErrors: "reads the device failed"
            case .rxDropBadVirtioHeader: "frames dropped: their virtio-net header was short or its checksum location outside the frame"
            case .rxChecksumsPartial: "frames whose checksum the kernel left partial (trusted, as Linux trusts its own; completed in captures)"
            case .rxSegmentedFrames: "UDP GSO frames read (several datagrams in one frame)"
            case .rxSegments: "datagrams cut from them"
            case .rxDropBadSegmentation: "GSO frames dropped: not IPv4 UDP, or a segmentation type other than UDP"
            case .rxBufferExhausted: "times the kernel found no receive buffer given to it (frames wait in its queue, dropped past it; the link then gives more)"
            case .txFrames: "frames the device took"
            case .txBytes: "bytes of those frames"
            case .txErrors: "frames the device refused (dropped) for another reason than the interface being down"
            case .txDropDown: "frames dropped because the interface was down (EIO)"
            case .txRetries: "writes the device put off (EAGAIN) and that were tried again"
            case .txCoalescedWrites: "writes that carried several UDP datagrams of one flow (segmentation offload)"
            case .txCoalescedSegments: "datagrams sent in those writes"
            case .txCoalescingRefused: "segmentation writes the kernel refused; sent one by one since"
            case .ioUringEnters: "io_uring_enter calls"
            case .sleeps: "times the link's thread slept waiting for frames"
            case .wakeups: "times another thread woke it"
            case .polls: "turns of a busy-polling executor that found nothing in the kernel for it (no system call)"
            }
        }
    }

    private let values: InlineArray<32, Atomic<UInt64>>

    public init() {
        precondition(Counter.allCases.count <= 32)
        values = InlineArray { _ in Atomic<UInt64>(0) }
    }

    /// Adds `amount` to `counter`; any thread.
    @inline(__always)
    public func add(_ counter: Counter, _ amount: UInt64 = 1) {
        values[counter.rawValue].add(amount, ordering: .relaxed)
    }

    /// The value of `counter` now.
    public subscript(_ counter: Counter) -> UInt64 { values[counter.rawValue].load(ordering: .relaxed) }

    /// Name and value of every counter, in a stable order.
    public var snapshot: [(String, UInt64)] { Counter.allCases.map { ($0.name, self[$0]) } }
}
