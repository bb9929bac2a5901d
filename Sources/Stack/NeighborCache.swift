import Wire

/// IPv6's neighbour cache (RFC 4861 5.1, 7.3.2): address → MAC with the
/// reachability states, and whole packets parked while an address is being
/// resolved. Bounded in entries, in packets per entry and in parked bytes.
/// Protocol decisions (when to solicit, what an advertisement changes) live
/// in `NetworkStack+NDP.swift`; this type only keeps state.
public struct NeighborCache {
    /// RFC 4861 7.3.2.
    public enum State: Sendable, Equatable {
        /// Solicited by multicast, no answer yet; packets wait.
        case incomplete
        /// Confirmed within the reachable time.
        case reachable
        /// Not confirmed lately; used, and checked once traffic goes to it.
        case stale
        /// Traffic went to a stale entry: wait a little for confirmation before probing.
        case delay
        /// Unicast solicitations sent to confirm it.
        case probe
    }

    public struct Entry {
        public internal(set) var mac: MACAddress?
        public internal(set) var state: State
        /// When it was last confirmed reachable (or created).
        public internal(set) var confirmedAt: StackInstant
        /// The neighbour said it is a router (R flag, or it sent an advertisement).
        public internal(set) var isRouter = false
        var solicitationsSent = 0
        /// When the state's timer fires (incomplete, delay and probe only).
        var timerAt: StackInstant?
        /// Whole IPv6 packets (no Ethernet header) waiting for the MAC.
        var pending: [[UInt8]] = []
    }

    public let capacity: Int
    public private(set) var entries: [IPv6Address: Entry] = [:]
    /// Bytes parked in all entries.
    public private(set) var pendingBytes = 0

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    public var count: Int { entries.count }

    public subscript(address: IPv6Address) -> Entry? { entries[address] }

    /// Earliest timer of any entry.
    var nextTimer: StackInstant? { entries.values.compactMap(\.timerAt).min() }

    /// Adds an entry (replacing none); returns the entry evicted to make room.
    mutating func insert(_ address: IPv6Address, _ entry: Entry) -> Entry? {
        var evicted: Entry?
        if entries[address] == nil, entries.count >= capacity { evicted = evictOne() }
        entries[address] = entry
        return evicted
    }

    mutating func update(_ address: IPv6Address, _ body: (inout Entry) -> Void) {
        guard var entry = entries[address] else { return }
        body(&entry)
        entries[address] = entry
    }

    /// Parks a packet on an existing entry; false when its queue or the byte bound is full.
    mutating func park(_ packet: [UInt8], for address: IPv6Address, perEntry: Int, maximumBytes: Int) -> Bool {
        guard let entry = entries[address], entry.pending.count < perEntry,
              pendingBytes + packet.count <= maximumBytes else { return false }
        entries[address]!.pending.append(packet)
        pendingBytes += packet.count
        return true
    }

    mutating func takePending(_ address: IPv6Address) -> [[UInt8]] {
        guard let pending = entries[address]?.pending, !pending.isEmpty else { return [] }
        entries[address]!.pending = []
        pendingBytes -= pending.reduce(0) { $0 + $1.count }
        return pending
    }

    mutating func remove(_ address: IPv6Address) -> Entry? {
        guard let entry = entries.removeValue(forKey: address) else { return nil }
        pendingBytes -= entry.pending.reduce(0) { $0 + $1.count }
        return entry
    }

    /// Forgets the entry least worth keeping: stale before the others,
    /// incomplete last, the least recently confirmed first; ties by address,
    /// so the choice never depends on hashing.
    private mutating func evictOne() -> Entry? {
        func rank(_ state: State) -> Int {
            switch state {
            case .stale: 0
            case .delay, .probe: 1
            case .reachable: 2
            case .incomplete: 3
            }
        }
        let victim = entries.min { a, b in
            let (aRank, bRank) = (rank(a.value.state), rank(b.value.state))
            if aRank != bRank { return aRank < bRank }
            return (a.value.confirmedAt, a.key.high, a.key.low) < (b.value.confirmedAt, b.key.high, b.key.low)
        }
        guard let victim else { return nil }
        return remove(victim.key)
    }
}
