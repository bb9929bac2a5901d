import Wire

/// The neighbour table: IPv4 address → MAC, with packets parked while an
/// address is being resolved. Bounded in entries and in parked packets per
/// entry. Protocol decisions (when to ask, what to merge) live in
/// `NetworkStack+ARP.swift`; this type only keeps state.
/// An IPv4 packet waiting for its next hop's MAC, with the socket that sent
/// it (to report a failed resolution to).
struct ParkedPacket {
    var header: IPv4Header
    var payload: [UInt8]
    var owner: UDPEndpoint?
}

public struct ARPCache {
    public enum State: Sendable, Equatable {
        /// Asked, no answer yet; packets wait in `pending`.
        case incomplete
        /// Confirmed within the reachable time.
        case reachable
        /// Older than the reachable time: still used, re-confirmed on next use.
        case stale
        /// Resolution failed; kept for a while as a record, and restarted by the next send.
        case failed
    }

    public struct Entry {
        public internal(set) var mac: MACAddress?
        public internal(set) var state: State
        /// When the mapping was last confirmed by an ARP packet (or first asked).
        public internal(set) var updatedAt: StackInstant
        var requestsSent = 0
        var nextRequestAt: StackInstant
        /// Complete IPv4 packets waiting for the MAC.
        var pending: [ParkedPacket] = []
    }

    public let capacity: Int
    public private(set) var entries: [IPv4Address: Entry] = [:] { didSet { version &+= 1 } }
    /// Changes with every change to `entries`, so a lookup remembered with it
    /// is known to be current while it is unchanged.
    public private(set) var version: UInt64 = 0
    /// Payload bytes parked in all entries.
    public private(set) var pendingBytes = 0

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        entries.reserveCapacity(capacity)
    }

    public var count: Int { entries.count }

    public subscript(address: IPv4Address) -> Entry? { entries[address] }

    /// Records a confirmed mapping. Returns the packets that were waiting for
    /// it. `evicted` is set when a full table had to forget someone.
    mutating func confirm(_ address: IPv4Address, mac: MACAddress, now: StackInstant) -> (pending: [ParkedPacket], evicted: Entry?) {
        var evicted: Entry?
        if entries[address] == nil, entries.count >= capacity { evicted = evictOne() }
        var entry = entries[address] ?? Entry(mac: nil, state: .reachable, updatedAt: now, nextRequestAt: now)
        let pending = entry.pending
        pendingBytes -= pending.reduce(0) { $0 + $1.payload.count }
        entry.mac = mac
        entry.state = .reachable
        entry.updatedAt = now
        entry.requestsSent = 0
        entry.pending = []
        entries[address] = entry
        return (pending, evicted)
    }

    /// Creates an incomplete entry (resolution starts). Returns the evicted entry if the table was full.
    mutating func beginResolution(_ address: IPv4Address, now: StackInstant) -> Entry? {
        var evicted: Entry?
        if entries.count >= capacity { evicted = evictOne() }
        entries[address] = Entry(mac: nil, state: .incomplete, updatedAt: now, nextRequestAt: now)
        return evicted
    }

    mutating func update(_ address: IPv4Address, _ body: (inout Entry) -> Void) {
        guard var entry = entries[address] else { return }
        body(&entry)
        entries[address] = entry
    }

    /// Parks a packet on an existing entry.
    mutating func park(_ packet: ParkedPacket, for address: IPv4Address) {
        guard entries[address] != nil else { return }
        entries[address]!.pending.append(packet)
        pendingBytes += packet.payload.count
    }

    /// Takes the packets parked on an entry.
    mutating func takePending(_ address: IPv4Address) -> [ParkedPacket] {
        guard let pending = entries[address]?.pending else { return [] }
        entries[address]!.pending = []
        pendingBytes -= pending.reduce(0) { $0 + $1.payload.count }
        return pending
    }

    mutating func remove(_ address: IPv4Address) -> Entry? {
        guard let entry = entries.removeValue(forKey: address) else { return nil }
        pendingBytes -= entry.pending.reduce(0) { $0 + $1.payload.count }
        return entry
    }

    /// Forgets the entry least worth keeping: the oldest resolved one, or
    /// failing that the oldest incomplete one.
    private mutating func evictOne() -> Entry? {
        let victim = entries.min { a, b in
            // Failed and stale entries go before reachable ones, incomplete ones last.
            let rank: (State) -> Int = { state in
                switch state {
                case .failed: 0
                case .stale: 1
                case .reachable: 2
                case .incomplete: 3
                }
            }
            let aRank = rank(a.value.state), bRank = rank(b.value.state)
            if aRank != bRank { return aRank < bRank }
            // Ties broken by address, so the choice never depends on hashing.
            return (a.value.updatedAt, a.key) < (b.value.updatedAt, b.key)
        }
        guard let victim else { return nil }
        return remove(victim.key)
    }
}
