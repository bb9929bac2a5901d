import Wire

/// Fragment reassembly for IPv4 (RFC 791 3.2, RFC 815) and IPv6 (RFC 8200
/// 4.5), bounded in concurrent datagrams and in buffered bytes, with the
/// overlap policy of modern stacks: a fragment wholly within data already
/// held is a duplicate and ignored, any partial overlap discards the whole
/// datagram (as Linux does since 2018, and RFC 5722 requires for IPv6),
/// which defeats overlap-based evasion. `Header` is what the first fragment
/// contributes to the whole datagram (its IPv4 header, or IPv6's
/// unfragmentable part); the protocol rules for it stay with each family.
public struct ReassemblyTable<Header> {
    /// Identifies the datagram a fragment belongs to (RFC 791, RFC 8200
    /// 4.5); IPv4 addresses as v4-mapped ones, the protocol 0 for IPv6.
    struct Key: Hashable {
        var source: IPv6Address
        var destination: IPv6Address
        var identification: UInt32
        var proto: UInt8
    }

    /// One fragment as the family's rules read it.
    struct Fragment {
        var key: Key
        /// Byte offset of `data` in the datagram's fragmentable part.
        var offset: Int
        var data: UnsafeRawBufferPointer
        var moreFragments: Bool
        /// Bytes the whole datagram carries besides the reassembled data
        /// within the 65 535 its length field can say (IPv4's header, IPv6's
        /// unfragmentable extension headers).
        var headerLength: Int
    }

    /// Why a fragment was dropped.
    enum Failure: Equatable {
        /// Not the last fragment and not a multiple of 8 bytes (or empty).
        case badLength
        /// The whole datagram would exceed 65 535 bytes ("ping of death").
        case oversize
        /// Data beyond the known end, or a second, different end.
        case inconsistent
        /// Wholly within data already held: ignored, the first copy wins.
        case duplicate
        /// A partial overlap: the whole datagram is discarded.
        case overlap
        /// No room within the byte bound even after eviction.
        case noRoom
    }

    /// One datagram being reassembled.
    struct Entry {
        /// The payload received so far, at its offsets.
        var payload: [UInt8] = []
        /// Received byte ranges [start, end), sorted and non-overlapping.
        var ranges: [Range<Int>] = []
        /// Payload length, known once the last fragment (MF = 0) arrived.
        var totalLength: Int?
        /// What the fragment at offset 0 gave (see `Header`), and what an
        /// ICMP time exceeded quotes of it.
        var firstHeader: Header?
        var firstQuote: [UInt8]?
        let deadline: StackInstant
        let createdAt: StackInstant

        var isComplete: Bool {
            guard let totalLength, firstHeader != nil, ranges.count == 1 else { return false }
            return ranges[0] == 0..<totalLength
        }
    }

    /// What became of a fragment.
    enum Outcome {
        /// Stored; the datagram is not complete yet.
        case stored
        /// The datagram is complete: its first fragment's header and the data.
        case complete(Header, [UInt8])
        /// Dropped, and why.
        case dropped(Failure)
    }

    /// A datagram given up on at its deadline; `quote` is set when its first
    /// fragment had arrived (so ICMP time exceeded may be sent, RFC 792).
    struct Expired {
        var source: IPv6Address
        var quote: [UInt8]?
    }

    public let maximumDatagrams: Int
    public let maximumBytes: Int
    public let timeout: StackDuration
    var entries: [Key: Entry] = [:]
    /// Bytes held in all `payload` buffers.
    public private(set) var bufferedBytes = 0

    public init(maximumDatagrams: Int, maximumBytes: Int, timeout: StackDuration) {
        self.maximumDatagrams = maximumDatagrams
        self.maximumBytes = maximumBytes
        self.timeout = timeout
    }

    /// Datagrams in progress.
    public var count: Int { entries.count }

    /// Earliest deadline, for the timer.
    var nextDeadline: StackInstant? { entries.values.map(\.deadline).min() }

    /// Adds a fragment. `evicted` counts datagrams pushed out to make room.
    /// `header` and `quote` are asked for only for the first fragment
    /// (`quote` nil: no ICMP error may be sent about the datagram).
    mutating func insert(_ fragment: Fragment, header: () -> Header?, quote: () -> [UInt8]?,
                         now: StackInstant, evicted: inout Int) -> Outcome {
        let key = fragment.key
        let data = fragment.data
        let start = fragment.offset
        let end = start + data.count
        // Every fragment but the last carries a multiple of 8 bytes (RFC 791, RFC 8200 4.5).
        if fragment.moreFragments && (data.count % 8 != 0 || data.isEmpty) {
            return .dropped(.badLength)
        }
        // The reassembled datagram must fit in 65535 bytes with its header
        // ("ping of death").
        if end + fragment.headerLength > 0xFFFF {
            discard(key)
            return .dropped(.oversize)
        }

        if entries[key] == nil {
            while entries.count >= maximumDatagrams, evictOldest() { evicted += 1 }
            entries[key] = Entry(deadline: now + timeout, createdAt: now)
        }
        // Taken out while it changes: every early return below that does not
        // `restore` it discards the whole datagram.
        var entry = entries.removeValue(forKey: key)!
        bufferedBytes -= entry.payload.count

        // The last fragment fixes the length; nothing may lie beyond it, and it may not change.
        if !fragment.moreFragments {
            if let known = entry.totalLength, known != end { return .dropped(.inconsistent) }
            if let last = entry.ranges.last, last.upperBound > end { return .dropped(.inconsistent) }
            entry.totalLength = end
        } else if let known = entry.totalLength, end > known {
            return .dropped(.inconsistent)
        }

        // A fragment wholly inside what we hold is a duplicate: ignored, and
        // the first copy wins. Any partial overlap kills the datagram (as
        // Linux's inet_frag_queue_insert decides).
        let incoming = start..<end
        if let holder = entry.ranges.first(where: { $0.overlaps(incoming) || $0.contains(start) && incoming.isEmpty }) {
            if holder.lowerBound <= start && end <= holder.upperBound {
                restore(key, entry)
                return .dropped(.duplicate)
            }
            return .dropped(.overlap)
        }

        // Grow the buffer only within the byte budget; evict others to make room.
        if end > entry.payload.count {
            let growth = end - entry.payload.count
            while bufferedBytes + entry.payload.count + growth > maximumBytes, evictOldest() { evicted += 1 }
            guard bufferedBytes + entry.payload.count + growth <= maximumBytes else {
                return .dropped(.noRoom)
            }
            entry.payload.append(contentsOf: repeatElement(0, count: growth))
        }
        entry.payload.withUnsafeMutableBytes { buffer in
            if !data.isEmpty { UnsafeMutableRawBufferPointer(rebasing: buffer[start..<end]).copyMemory(from: data) }
        }
        insertRange(incoming, into: &entry.ranges)
        if start == 0 {
            entry.firstHeader = header()
            entry.firstQuote = quote()
        }

        if entry.isComplete, let header = entry.firstHeader {
            let total = entry.totalLength!
            let payload = entry.payload.count == total ? entry.payload : Array(entry.payload[0..<total])
            return .complete(header, payload)
        }
        restore(key, entry)
        return .stored
    }

    /// Removes and returns the datagrams whose deadline has passed.
    mutating func expire(now: StackInstant) -> [Expired] {
        var expired: [Expired] = []
        // In a fixed order (creation time, then key), so replays are byte-identical.
        let due = entries.filter { $0.value.deadline <= now }.sorted {
            ($0.value.createdAt, $0.key.source.high, $0.key.source.low, $0.key.identification) < ($1.value.createdAt, $1.key.source.high, $1.key.source.low, $1.key.identification)
        }
        for (key, entry) in due {
            expired.append(Expired(source: key.source, quote: entry.firstQuote))
            discard(key)
        }
        return expired
    }

    private mutating func restore(_ key: Key, _ entry: Entry) {
        bufferedBytes += entry.payload.count
        entries[key] = entry
    }

    private mutating func discard(_ key: Key) {
        if let entry = entries.removeValue(forKey: key) { bufferedBytes -= entry.payload.count }
    }

    /// Forgets the oldest datagram; false when there is none.
    private mutating func evictOldest() -> Bool {
        guard let oldest = entries.min(by: {
            ($0.value.createdAt, $0.key.source.high, $0.key.source.low, $0.key.identification) < ($1.value.createdAt, $1.key.source.high, $1.key.source.low, $1.key.identification)
        })?.key else { return false }
        discard(oldest)
        return true
    }

    private func insertRange(_ range: Range<Int>, into ranges: inout [Range<Int>]) {
        var index = ranges.firstIndex { $0.lowerBound > range.lowerBound } ?? ranges.count
        ranges.insert(range, at: index)
        // Merge with touching neighbours so a complete datagram is one range.
        if index + 1 < ranges.count, ranges[index].upperBound == ranges[index + 1].lowerBound {
            ranges[index] = ranges[index].lowerBound..<ranges[index + 1].upperBound
            ranges.remove(at: index + 1)
        }
        if index > 0, ranges[index - 1].upperBound == ranges[index].lowerBound {
            ranges[index - 1] = ranges[index - 1].lowerBound..<ranges[index].upperBound
            ranges.remove(at: index)
            index -= 1
        }
    }
}
