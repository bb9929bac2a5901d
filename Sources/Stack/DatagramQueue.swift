import SocketAPI
import Wire

/// Facts about a received datagram, without its payload.
public struct DatagramInfo: Sendable, Equatable {
    /// The sender's address.
    public var source: IPv4Address
    /// The sender's port.
    public var sourcePort: UInt16
    /// The address it was sent to (ours, or a broadcast address).
    public var destination: IPv4Address
    /// The payload's full length (it may exceed what a too-small buffer received).
    public var length: Int
    /// The IP header's TTL and TOS as they arrived (IP_RECVTTL, IP_RECVTOS).
    public var timeToLive: UInt8
    public var typeOfService: UInt8
    /// When the frame carrying it was handled, on the stack's monotonic
    /// clock (SO_TIMESTAMP converts it to wall-clock time).
    public var receivedAt: StackInstant
    /// For a datagram that came over IPv6: its source and destination
    /// (`source` and `destination` are then unspecified), the hop limit
    /// being in `timeToLive` and the traffic class in `typeOfService`.
    public var source6: IPv6Address?
    public var destination6: IPv6Address?

    /// The sender as a socket address of its family.
    public var sourceAddress: SocketAddress {
        source6.map { SocketAddress($0, sourcePort) } ?? SocketAddress(source, sourcePort)
    }

    public init(source: IPv4Address, sourcePort: UInt16, destination: IPv4Address, length: Int,
                timeToLive: UInt8 = 64, typeOfService: UInt8 = 0, receivedAt: StackInstant = .zero) {
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.length = length
        self.timeToLive = timeToLive
        self.typeOfService = typeOfService
        self.receivedAt = receivedAt
    }
}

/// A socket's bounded receive queue. Datagrams up to `slotSize` bytes (any
/// that fit one Ethernet frame) are copied into preallocated slots, so
/// queueing and taking them allocates nothing in steady state; larger
/// (reassembled) ones keep their own array. Bounded in datagrams and bytes.
///
/// A class: it owns its slot memory, which a copy of a struct would share.
/// Touched only by whoever holds the stack (see `UDPEndpoint`).
final class DatagramQueue {
    /// Payload bytes a slot holds: a full UDP payload in a 1500-byte MTU.
    static let slotSize = 1472

    @exclusivity(unchecked) private var infos: [DatagramInfo]
    @exclusivity(unchecked) private var large: [[UInt8]?]
    /// Slot storage, allocated when the first datagram arrives.
    @exclusivity(unchecked) private var slots: UnsafeMutableRawPointer?
    @exclusivity(unchecked) private var head = 0
    @exclusivity(unchecked) private(set) var count = 0
    /// Payload bytes queued.
    @exclusivity(unchecked) private(set) var bytes = 0
    let capacity: Int
    /// Payload bytes queued at most (SO_RCVBUF); lowering it keeps what is queued.
    @exclusivity(unchecked) var maximumBytes: Int

    init(capacity: Int, maximumBytes: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.maximumBytes = maximumBytes
        infos = []
        large = []
    }

    var isEmpty: Bool { count == 0 }

    /// True when a datagram of `length` bytes would exceed a bound. An empty
    /// queue takes one datagram of any size, as Linux does: a receive buffer
    /// smaller than a datagram must not make the socket deaf to it.
    func wouldOverflow(adding length: Int) -> Bool {
        count == capacity || (count > 0 && bytes + length > maximumBytes)
    }

    /// Appends a copy of `payload`; the caller checked `wouldOverflow`.
    func push(_ payload: UnsafeRawBufferPointer, info: DatagramInfo) {
        if slots == nil {
            slots = UnsafeMutableRawPointer.allocate(byteCount: capacity * Self.slotSize, alignment: 16)
            infos = Array(repeating: info, count: capacity)
            large = Array(repeating: nil, count: capacity)
        }
        let index = (head + count) % capacity
        infos[index] = info
        if payload.count <= Self.slotSize {
            if let base = payload.baseAddress {
                (slots! + index * Self.slotSize).copyMemory(from: base, byteCount: payload.count)
            }
        } else {
            large[index] = Array(payload)
        }
        count += 1
        bytes += payload.count
    }

    /// Copies the oldest datagram into `buffer` (as much as fits) and removes it.
    func pop(into buffer: UnsafeMutableRawBufferPointer) -> DatagramInfo? {
        guard count > 0, let slots else { return nil }
        let info = infos[head]
        let copied = min(info.length, buffer.count)
        if let big = large[head] {
            big.withUnsafeBytes { buffer.baseAddress?.copyMemory(from: $0.baseAddress!, byteCount: copied) }
            large[head] = nil
        } else if copied > 0 {
            buffer.baseAddress!.copyMemory(from: slots + head * Self.slotSize, byteCount: copied)
        }
        head = (head + 1) % capacity
        count -= 1
        bytes -= info.length
        return info
    }

    /// Lends the oldest datagram to `body` in place, without a copy; removes
    /// it when `body` returns true. Nil when empty.
    func withOldest(_ body: (UnsafeRawBufferPointer, DatagramInfo) -> Bool) -> Bool? {
        guard count > 0, let slots else { return nil }
        let info = infos[head]
        let taken: Bool
        if let big = large[head] {
            taken = big.withUnsafeBytes { body($0, info) }
        } else {
            taken = body(UnsafeRawBufferPointer(start: slots + head * Self.slotSize, count: info.length), info)
        }
        if taken {
            large[head] = nil
            head = (head + 1) % capacity
            count -= 1
            bytes -= info.length
        }
        return taken
    }

    /// Removes the oldest datagram, returning its payload as an array.
    func pop() -> (DatagramInfo, [UInt8])? {
        guard count > 0 else { return nil }
        let length = infos[head].length
        var payload = [UInt8](repeating: 0, count: length)
        let info = payload.withUnsafeMutableBytes { pop(into: $0) }
        return info.map { ($0, payload) }
    }

    func removeAll() {
        for i in 0..<large.count { large[i] = nil }
        head = 0
        count = 0
        bytes = 0
    }

    deinit { slots?.deallocate() }
}
