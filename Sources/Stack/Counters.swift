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

    // IPv6 (RFC 8200)
    case ipv6RxPackets
    case ipv6DropTruncated
    case ipv6DropBadVersion
    /// Not one of our addresses, all-nodes or one of their solicited-node groups.
    case ipv6DropNotForUs
    /// A multicast source address (RFC 4291 2.7).
    case ipv6DropBadSource
    /// A next header the stack does not know (parameter problem code 1 sent).
    case ipv6DropUnsupportedNextHeader
    /// An extension header cut short or with malformed options, or hop-by-hop not first.
    case ipv6DropBadExtensionHeader
    /// An option of unknown type whose high bits say discard (RFC 8200 4.2).
    case ipv6DropUnknownOption
    /// A routing header with segments left: the stack does not forward (parameter problem sent).
    case ipv6DropRoutingHeader
    /// Next header 59: nothing follows.
    case ipv6DropNoNextHeader
    case ipv6RxFragments
    case ipv6Reassembled
    /// Not the last fragment and not a multiple of 8 bytes (parameter problem sent).
    case ipv6DropFragmentBadLength
    /// Would reassemble beyond 65 535 bytes (parameter problem sent).
    case ipv6DropReassemblyOversize
    case ipv6DropFragmentInconsistent
    case ipv6DropFragmentDuplicate
    /// Overlapping fragments: the whole datagram is discarded (RFC 5722).
    case ipv6DropReassemblyOverlap
    case ipv6DropReassemblyNoRoom
    case ipv6DropReassemblyEvicted
    /// Given up after 60 s (time exceeded sent if the first fragment came).
    case ipv6DropReassemblyTimeout
    case ipv6RxDelivered
    case ipv6TxPackets
    /// Datagrams sent in fragments.
    case ipv6TxFragmented
    /// No route: off-link with no router, or no source address for the destination.
    case ipv6TxDropNoRoute
    /// Packets the neighbour cache could not park (queue or byte bound full).
    case ipv6TxDropPendingQueueFull
    /// Parked packets dropped because the neighbour never answered.
    case ipv6TxDropResolutionFailed
    /// Addresses found in use by another node while being checked (never used).
    case ipv6DadConflicts
    /// Addresses formed from advertised prefixes (SLAAC).
    case ipv6AddressesAutoconfigured
    /// Advertised prefixes ignored because `ipv6MaximumAddresses` are held.
    case ipv6DropAddressLimit
    /// Path MTUs lowered by packet too big messages.
    case ipv6PathMTUUpdates

    // ICMPv6 (RFC 4443) and neighbour discovery (RFC 4861)
    case icmpv6RxMessages
    case icmpv6DropTruncated
    case icmpv6DropBadChecksum
    case icmpv6DropUnhandledType
    case icmpv6RxEchoRequests
    case icmpv6RxEchoReplies
    case icmpv6TxEchoReplies
    case icmpv6RxErrors
    /// Errors about datagrams we sent that reached a socket or the path MTU table.
    case icmpv6RxErrorsDelivered
    case icmpv6RxErrorsUnmatched
    case icmpv6RxPacketTooBig
    case icmpv6TxDestinationUnreachable
    case icmpv6TxParameterProblems
    case icmpv6TxTimeExceeded
    /// Errors not sent: about an error, a multicast, an unspecified or multicast source (RFC 4443 2.4 e).
    case icmpv6TxErrorsSuppressed
    /// Errors not sent because of the rate limit (RFC 4443 2.4 f).
    case icmpv6TxErrorsRateLimited
    case icmpv6RxNeighborSolicitations
    /// A neighbour discovery message RFC 4861 says to discard (hop limit not 255, code not 0, too short, bad option).
    case icmpv6DropInvalidNeighborDiscovery
    /// A solicitation for an address that is not ours.
    case icmpv6DropNotOurTarget
    case icmpv6TxNeighborAdvertisements
    case icmpv6TxNeighborSolicitations
    case icmpv6RxNeighborAdvertisements
    case icmpv6RxRouterAdvertisements
    case icmpv6TxRouterSolicitations
    /// MLDv2 reports for the solicited-node groups (RFC 3810), and queries heard.
    case icmpv6TxMldReports
    case icmpv6RxMldQueries
    /// A query not from a link-local router at hop limit 1, or too short.
    case icmpv6DropInvalidMld
    case icmpv6NeighborCacheEvictions
    case icmpv6ResolutionFailures
    case icmpv6TxDropTooBig

    // UDP
    case udpRxDatagrams
    case udpDropTruncated
    case udpDropBadLength
    case udpDropBadChecksum
    /// IPv6 UDP with checksum 0, which RFC 8200 8.1 forbids.
    case udpDropZeroChecksum
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
    private var values: InlineArray<192, UInt64>

    public init() {
        precondition(StackCounter.allCases.count <= 192)
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
