/// Every event the stack counts, per layer and per drop reason (like `netstat -s`).
/// A drop always increments exactly one `...Drop...` counter.
public enum StackCounter: Int, CaseIterable, Sendable {
    // Ethernet
    case ethernetRxFrames
    case ethernetDropTruncated
    case ethernetDropNotForUs
    case ethernetDropUnknownEtherType
    case ethernetTxFrames
    /// A frame could not be sent because the TX ring was full.
    case ethernetTxDropLinkFull

    // ARP
    case arpRxPackets
    case arpDropTruncated
    case arpDropUnsupported
    case arpDropBadSender
    case arpRxRequests
    case arpRxReplies
    case arpTxRequests
    case arpTxReplies
    case arpCacheEvictions
    /// Parked packets dropped because the neighbour's queue was full.
    case arpDropPendingQueueFull
    /// Parked packets dropped because the neighbour never answered.
    case arpDropResolutionFailed
    case arpResolutionFailures

    // IPv4
    case ipv4RxPackets
    case ipv4DropTruncated
    case ipv4DropBadVersion
    case ipv4DropBadHeaderLength
    case ipv4DropBadLength
    case ipv4DropBadChecksum
    case ipv4DropNotForUs
    case ipv4DropBadSource
    case ipv4DropUnknownProtocol
    case ipv4RxFragments
    case ipv4Reassembled
    /// A non-final fragment whose length is not a multiple of 8.
    case ipv4DropFragmentBadLength
    /// A fragment contradicting the datagram's length as already known.
    case ipv4DropFragmentInconsistent
    /// An exact copy of a fragment already held (tolerated, not an error).
    case ipv4DropFragmentDuplicate
    /// Fragments overlapping differently: the whole datagram is discarded.
    case ipv4DropReassemblyOverlap
    /// Fragments reaching beyond 65535 bytes.
    case ipv4DropReassemblyOversize
    /// No room within the reassembly byte bound.
    case ipv4DropReassemblyNoRoom
    /// Datagrams pushed out of a full reassembly table (the oldest go first).
    case ipv4DropReassemblyEvicted
    /// Datagrams still incomplete at the reassembly timeout.
    case ipv4DropReassemblyTimeout
    case ipv4RxDelivered
    case ipv4TxPackets
    /// Datagrams to the stack's own address, delivered locally instead of on the link.
    case ipv4TxLoopedBack
    case ipv4TxDropNoRoute
    case ipv4TxDropTooBig
    case ipv4TxFragments
    case ipv4TxFragmented

    // ICMP
    case icmpRxMessages
    case icmpDropTruncated
    case icmpDropBadChecksum
    case icmpDropBroadcastEcho
    case icmpDropUnhandledType
    case icmpRxEchoRequests
    case icmpRxEchoReplies
    case icmpRxErrors
    /// An ICMP error whose quoted packet is too short to act on.
    case icmpDropBadQuote
    /// ICMP errors handed to a connected socket.
    case icmpRxErrorsDelivered
    /// ICMP errors that matched no connected socket (ignored, RFC 1122 4.1.3.3).
    case icmpRxErrorsUnmatched
    case icmpTxEchoReplies
    case icmpTxDestinationUnreachable
    case icmpTxTimeExceeded
    /// ICMP errors not sent because RFC 1122 3.2.2 forbids answering that packet.
    case icmpTxErrorsSuppressed
    /// ICMP errors not sent because of the rate limit.
    case icmpTxErrorsRateLimited

    // IPv6 (first steps: link-local, neighbour discovery for it, echo)
    case ipv6RxPackets
    case ipv6DropTruncated
    case ipv6DropBadVersion
    /// Not our link-local address, all-nodes or our solicited-node group.
    case ipv6DropNotForUs
    /// A next header other than ICMPv6 (extension headers and UDP over IPv6 are not handled yet).
    case ipv6DropUnsupportedNextHeader
    case ipv6TxPackets
    /// Addresses found in use by another node while being checked (never used).
    case ipv6DadConflicts

    // ICMPv6
    case icmpv6RxMessages
    case icmpv6DropTruncated
    case icmpv6DropBadChecksum
    case icmpv6DropUnhandledType
    case icmpv6RxEchoRequests
    case icmpv6TxEchoReplies
    case icmpv6RxNeighborSolicitations
    /// A solicitation RFC 4861 7.1.1 says to discard (hop limit not 255, code not 0, too short, bad option).
    case icmpv6DropInvalidNeighborDiscovery
    /// A solicitation for an address that is not ours.
    case icmpv6DropNotOurTarget
    case icmpv6TxNeighborAdvertisements
    case icmpv6TxNeighborSolicitations
    case icmpv6RxNeighborAdvertisements
    case icmpv6TxDropTooBig

    // UDP
    case udpRxDatagrams
    case udpDropTruncated
    case udpDropBadLength
    case udpDropBadChecksum
    case udpDropNoPort
    case udpDropQueueFull
    case udpRxDelivered
    /// Multicast datagrams delivered (to one socket or more).
    case udpRxMulticastDelivered
    /// Multicast datagrams for a joined group no socket on the port had joined for their source.
    case udpDropMulticastNoMember
    /// ICMP errors not queued for an IP_RECVERR socket whose error queue was full.
    case udpDropErrorQueueFull
    case udpTxDatagrams
    /// Multicast datagrams delivered to our own joined sockets (IP_MULTICAST_LOOP).
    case udpTxMulticastLoopedBack

    // IGMP (RFC 2236, RFC 3376)
    case igmpRxMessages
    case igmpDropTruncated
    /// A 9 to 11 byte query, which RFC 3376 7.1 says to ignore.
    case igmpDropBadLength
    case igmpDropBadChecksum
    case igmpDropUnknownType
    /// A query for a non-multicast group, or sent to an address its kind may not use.
    case igmpDropBadQuery
    case igmpRxQueries
    /// Reports and leaves of other hosts (heard, not acted on except for v2 suppression).
    case igmpRxReports
    case igmpTxReports
    case igmpTxLeaves
    case igmpTxDropTooBig
    /// Joins refused because the host holds `multicastMaximumGroups` already.
    case igmpDropGroupLimit
    /// Repetitions of a leave forgone because `multicastMaximumGroups` leaves were being repeated already.
    case igmpTxLeaveRepeatsDropped

    /// `ipv4DropBadChecksum` → `ipv4.drop_bad_checksum`.
    public var name: String {
        let raw = String(describing: self)
        let layers = ["ethernet", "arp", "ipv4", "ipv6", "icmpv6", "icmp", "igmp", "udp"]
        let layer = layers.first { raw.hasPrefix($0) } ?? ""
        var rest = ""
        for ch in raw.dropFirst(layer.count) {
            if ch.isUppercase { rest += "_" + ch.lowercased() } else { rest.append(ch) }
        }
        return layer + "." + rest.drop(while: { $0 == "_" })
    }
}

/// Counter values, indexed by `StackCounter`. A plain value: the core owns one.
public struct StackCounters: Sendable, Equatable {
    /// Inline, not an array: an increment is an add, with no copy-on-write check.
    private var values: InlineArray<128, UInt64>

    public init() {
        precondition(StackCounter.allCases.count <= 128)
        values = InlineArray(repeating: 0)
    }

    public static func == (a: StackCounters, b: StackCounters) -> Bool {
        StackCounter.allCases.allSatisfy { a[$0] == b[$0] }
    }

    @inline(__always)
    public mutating func increment(_ counter: StackCounter, by amount: UInt64 = 1) {
        values[counter.rawValue] &+= amount
    }

    public subscript(_ counter: StackCounter) -> UInt64 { values[counter.rawValue] }

    /// Every counter with its value, in declaration order.
    public var all: [(counter: StackCounter, value: UInt64)] {
        StackCounter.allCases.map { ($0, values[$0.rawValue]) }
    }

    /// Counters whose value differs from `earlier`.
    public func changed(since earlier: StackCounters) -> [(counter: StackCounter, value: UInt64)] {
        all.filter { earlier[$0.counter] != $0.value }
    }
}
