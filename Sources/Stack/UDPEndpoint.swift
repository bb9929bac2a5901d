import SocketAPI
import Wire

/// A datagram waiting in a socket's receive queue.
public struct ReceivedDatagram: Sendable, Equatable {
    /// The sender's address.
    public var source: IPv4Address
    /// The sender's port.
    public var sourcePort: UInt16
    /// The address it was sent to (ours, or a broadcast address).
    public var destination: IPv4Address
    /// The payload.
    public var payload: [UInt8]
    /// The sender over IPv6 (then `source` is unspecified).
    public var source6: IPv6Address?

    /// The sender as a socket address of its family.
    public var sourceAddress: SocketAddress {
        source6.map { SocketAddress($0, sourcePort) } ?? SocketAddress(source, sourcePort)
    }

    public init(source: IPv4Address, sourcePort: UInt16, destination: IPv4Address, payload: [UInt8], source6: IPv6Address? = nil) {
        self.source6 = source6
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.payload = payload
    }
}

/// An ICMP error about a datagram a socket sent, as IP_RECVERR queues it
/// (Linux's `sock_extended_err` with origin ICMP).
public struct ICMPErrorReport: Sendable, Equatable {
    /// What the error means to the socket (ee_errno).
    public var error: SocketError
    public var type: UInt8
    public var code: UInt8
    /// The ICMP header's rest field where it carries something (the next-hop MTU of "fragmentation needed").
    public var info: UInt32
    /// Who sent the ICMP error (SO_EE_OFFENDER).
    public var offender: IPv4Address
    /// Where the failed datagram was going.
    public var destination: IPv4Address
    public var destinationPort: UInt16
    /// The failed datagram's payload as far as the error quoted it (at most `quotedPayloadLimit` bytes).
    public var payload: [UInt8]
    /// For an ICMPv6 error: the offender and the failed datagram's
    /// destination (then `offender` and `destination` are unspecified).
    public var offender6: IPv6Address?
    public var destination6: IPv6Address?

    public static let quotedPayloadLimit = 64

    public init(error: SocketError, type: UInt8, code: UInt8, info: UInt32, offender: IPv4Address,
                destination: IPv4Address, destinationPort: UInt16, payload: [UInt8]) {
        self.error = error
        self.type = type
        self.code = code
        self.info = info
        self.offender = offender
        self.destination = destination
        self.destinationPort = destinationPort
        self.payload = payload
    }
}

/// The stack's side of a UDP socket: its addresses and bounded receive queue.
///
/// Owned by `NetworkStack`; touched only by whoever holds the stack (one
/// thread at a time).
public final class UDPEndpoint {
    /// A number unique within the stack, for logs.
    public let id: Int
    /// IPv4 only, or IPv6 and (unless `v6Only`) IPv4 too (an AF_INET6 socket).
    public let family: AddressFamily
    /// An IPv6 socket takes IPv6 only (IPV6_V6ONLY); set before binding.
    @exclusivity(unchecked) public var v6Only = false
    /// The IPv6 address bound (unspecified: any); IPv6 sockets only.
    @exclusivity(unchecked) public internal(set) var localAddress6: IPv6Address = .unspecified
    /// The IPv6 peer set by connect, nil when not connected to one.
    @exclusivity(unchecked) public internal(set) var remote6: (address: IPv6Address, port: UInt16)?
    @exclusivity(unchecked) public internal(set) var localAddress: IPv4Address = .any
    /// 0 until bound (explicitly or by the first send).
    @exclusivity(unchecked) public internal(set) var localPort: UInt16 = 0
    @exclusivity(unchecked) public internal(set) var isClosed = false
    /// The peer set by connect: only its datagrams are received, and send
    /// without a destination goes to it. Nil when not connected.
    @exclusivity(unchecked) public internal(set) var remote: (address: IPv4Address, port: UInt16)?
    /// Allows sending to broadcast addresses (SO_BROADCAST).
    @exclusivity(unchecked) public var allowsBroadcast = false
    /// Lets several sockets bind the same port if all of them set it (SO_REUSEADDR).
    @exclusivity(unchecked) public var reuseAddress = false
    /// Sets DF and refuses datagrams over the MTU instead of fragmenting them (IP_PMTUDISC_DO).
    @exclusivity(unchecked) public var dontFragment = false
    /// TTL of unicast and broadcast datagrams (IP_TTL).
    @exclusivity(unchecked) public var timeToLive: UInt8 = 64
    /// TOS byte of every datagram (IP_TOS).
    @exclusivity(unchecked) public var typeOfService: UInt8 = 0
    /// TTL of multicast datagrams (IP_MULTICAST_TTL; 1 keeps them on the link, RFC 1112 6.1).
    @exclusivity(unchecked) public var multicastTimeToLive: UInt8 = 1
    /// Delivers our own multicast datagrams to our sockets that joined the group too (IP_MULTICAST_LOOP).
    @exclusivity(unchecked) public var multicastLoop = true
    /// Allows binding to an address that is not the stack's (IP_FREEBIND).
    @exclusivity(unchecked) public var freeBind = false
    /// Queues ICMP errors about this socket's datagrams for `takeQueuedError`,
    /// connected or not (IP_RECVERR).
    @exclusivity(unchecked) public var receivesErrors = false {
        didSet { if !receivesErrors { errorQueue.removeAll() } }
    }
    /// ICMP errors queued (IP_RECVERR's error queue), oldest first; bounded by `errorQueueLimit`.
    @exclusivity(unchecked) public internal(set) var errorQueue: [ICMPErrorReport] = []
    public static let errorQueueLimit = 16
    /// Groups joined: nil for every source, else the sources asked for.
    @exclusivity(unchecked) public internal(set) var memberships: [IPv4Address: Set<IPv4Address>?] = [:]
    /// IPv6 groups joined (IPV6_JOIN_GROUP; any source).
    @exclusivity(unchecked) public internal(set) var memberships6: Set<IPv6Address> = []

    let receiveQueue: DatagramQueue

    /// Datagrams queued for this socket.
    @exclusivity(unchecked) public internal(set) var receivedDatagrams: UInt64 = 0
    /// Datagrams for this socket dropped because its queue was full (also
    /// counted in `udp.drop_queue_full`): what `ss` shows as drops.
    @exclusivity(unchecked) public internal(set) var droppedDatagrams: UInt64 = 0
    /// Datagrams this socket sent.
    @exclusivity(unchecked) public internal(set) var sentDatagrams: UInt64 = 0

    /// Called, by the thread holding the stack, when events become true.
    /// Must not block (it runs inside the stack).
    @exclusivity(unchecked) public var onEvent: ((ReadinessEvents) -> Void)?

    /// Queues an ICMP error (IP_RECVERR) and makes it the pending error, as Linux does.
    /// False when the queue was full (the report is dropped).
    func queue(_ report: ICMPErrorReport) -> Bool {
        guard !isClosed else { return true }
        guard errorQueue.count < Self.errorQueueLimit else { return false }
        errorQueue.append(report)
        self.report(report.error)
        return true
    }

    init(id: Int, family: AddressFamily, queueDatagrams: Int, queueBytes: Int) {
        self.id = id
        self.family = family
        receiveQueue = DatagramQueue(capacity: queueDatagrams, maximumBytes: queueBytes)
    }

    /// Payload bytes waiting.
    public var queuedBytes: Int { receiveQueue.bytes }

    /// The receive queue's bound in payload bytes (SO_RCVBUF), kept within
    /// `receiveBufferLimits`; the datagram count stays bounded as configured.
    public var receiveBufferBytes: Int {
        get { receiveQueue.maximumBytes }
        set { receiveQueue.maximumBytes = min(max(newValue, Self.receiveBufferLimits.lowerBound), Self.receiveBufferLimits.upperBound) }
    }

    /// What `receiveBufferBytes` may be set to.
    public static let receiveBufferLimits = 2048...(4 << 20)

    /// A send found the link full: tell this socket `.writable` when it drains.
    @exclusivity(unchecked) var wantsWritable = false

    /// Asks for a `.writable` event when the link next drains.
    public func wantsWritableNotification() { wantsWritable = true }

    /// An asynchronous error to hand to the next call (SO_ERROR).
    @exclusivity(unchecked) public internal(set) var pendingError: SocketError?

    /// Returns and clears the pending error.
    public func takePendingError() -> SocketError? {
        defer { pendingError = nil }
        return pendingError
    }

    /// Takes the oldest queued ICMP error (recvmsg with MSG_ERRQUEUE). As
    /// on Linux, the socket's pending error becomes the next queued one's, or none.
    public func takeQueuedError() -> ICMPErrorReport? {
        guard !errorQueue.isEmpty else { return nil }
        let report = errorQueue.removeFirst()
        pendingError = errorQueue.first?.error
        return report
    }

    /// Records an asynchronous error and wakes whoever waits on the socket.
    func report(_ error: SocketError) {
        guard !isClosed else { return }
        pendingError = error
        onEvent?(.error)
    }

    /// Datagrams waiting.
    public var queuedDatagrams: Int { receiveQueue.count }

    /// Takes IPv4 datagrams: an IPv4 socket, or an IPv6 one open to both
    /// families and bound and connected to nothing IPv6-only.
    var takesIPv4: Bool {
        family == .ipv4 || (!v6Only && localAddress6.isUnspecified && remote6 == nil)
    }

    /// Could a datagram reach both this socket and `other` (so they may not
    /// bind one port without SO_REUSEADDR)?
    func overlaps(_ other: UDPEndpoint) -> Bool {
        if takesIPv4 && other.takesIPv4 && (localAddress.isUnspecified || other.localAddress.isUnspecified
                                            || localAddress == other.localAddress) { return true }
        return family == .ipv6 && other.family == .ipv6
            && (localAddress6.isUnspecified || other.localAddress6.isUnspecified || localAddress6 == other.localAddress6)
    }


    /// The events true right now, except `.writable`, which depends on the
    /// link: ask `NetworkStack.readiness(of:)`.
    public var readiness: ReadinessEvents {
        var events: ReadinessEvents = []
        if !receiveQueue.isEmpty { events.insert(.readable) }
        if pendingError != nil || !errorQueue.isEmpty { events.insert(.error) }
        if isClosed { events.insert(.closed) }
        return events
    }
}
