import Wire

/// How the stack is set up: its identity on the link and the bound of every resource.
public struct StackConfiguration: Sendable {
    /// The stack's Ethernet address.
    public var mac: MACAddress
    /// The stack's address and subnet.
    public var interface: IPv4Interface
    /// Default gateway for destinations off the subnet; nil means no default route.
    public var gateway: IPv4Address?
    /// IP MTU of the link (bytes of IP packet per frame).
    public var mtu: Int = 1500
    /// False on a link without link-layer addresses (a TUN device): no ARP,
    /// every neighbour is reachable at once, and received frames are taken
    /// whatever their (made-up) Ethernet destination.
    public var resolvesLinkAddresses = true
    /// IPv6 addresses beside the link-local one the MAC gives (`--address6`).
    public var ipv6Addresses: [IPv6Address] = []
    /// Neighbour solicitations sent to check an IPv6 address is unique before
    /// using it (RFC 4862 5.1 DupAddrDetectTransmits; 0 uses it at once).
    /// `tapstack run` sends RFC 4862's default of 1; a stack made in code
    /// (tests, a memory link) uses its addresses at once unless it asks.
    public var duplicateAddressDetectionTransmits = 0
    /// Time between those solicitations, and after the last (RFC 4861 RetransTimer).
    public var duplicateAddressDetectionInterval = StackDuration.seconds(1)

    /// Reports the solicited-node groups with MLDv2 (RFC 3810) so that
    /// switches snooping MLD forward neighbour solicitations to the stack.
    /// `tapstack run` does; a stack made in code stays quiet unless it asks
    /// (as with duplicate address detection).
    public var reportsMulticastListening = false
    /// Takes addresses from routers' advertisements (SLAAC, RFC 4862 5.5):
    /// router solicitations at start, and an address for each advertised
    /// /64 prefix with the autonomous flag (`--address6 auto`).
    public var ipv6Autoconfiguration = false
    /// Router solicitations at start and the time between them (RFC 4861 10:
    /// MAX_RTR_SOLICITATIONS, RTR_SOLICITATION_INTERVAL).
    public var routerSolicitations = 3
    public var routerSolicitationInterval = StackDuration.seconds(4)
    /// IPv6 addresses held at most (link-local, configured and autoconfigured);
    /// advertised prefixes beyond are ignored and counted.
    public var ipv6MaximumAddresses = 16
    /// IPv6 neighbours remembered at most (RFC 4861 neighbour cache).
    public var neighborCacheCapacity = 256
    /// RFC 4861 10: REACHABLE_TIME, DELAY_FIRST_PROBE_TIME, RetransTimer, MAX_MULTICAST_SOLICIT / MAX_UNICAST_SOLICIT.
    public var neighborReachableTime = StackDuration.seconds(30)
    public var neighborDelayFirstProbe = StackDuration.seconds(5)
    public var neighborRetransmitInterval = StackDuration.seconds(1)
    public var neighborMaxSolicitations = 3
    /// Path MTUs learned from packet too big messages: destinations remembered
    /// at most, and for how long (RFC 8201 5.3 suggests 10 minutes).
    public var pathMTUCapacity = 64
    public var pathMTUTimeout = StackDuration.seconds(600)
    /// How long an incomplete IPv6 datagram is kept (RFC 8200 4.5: 60 s).
    public var ipv6ReassemblyTimeout = StackDuration.seconds(60)

    /// Neighbours remembered at most; the least recently confirmed is evicted beyond.
    public var arpCacheCapacity = 512
    /// How long a confirmed neighbour is used before it must be re-confirmed (RFC 1122 2.3.2.1).
    public var arpReachableTime = StackDuration.seconds(30)
    /// Time between ARP requests while resolving.
    public var arpRetryInterval = StackDuration.seconds(1)
    /// ARP requests sent before resolution fails.
    public var arpMaxRequests = 3
    /// Packets parked per unresolved neighbour (RFC 1122 2.3.2.2 asks for at least one).
    public var arpPendingPacketsPerNeighbour = 16
    /// Payload bytes parked for all neighbours together.
    public var arpPendingMaximumBytes = 1 << 20
    /// How long a failed resolution stays in the table as a record.
    public var arpFailedHoldTime = StackDuration.seconds(20)

    /// Gratuitous ARP announcements at start, and the time between them (RFC 5227 2.3).
    public var arpAnnouncements = 2
    public var arpAnnounceInterval = StackDuration.seconds(2)

    /// Datagrams reassembled at once; beyond, the oldest is dropped.
    public var reassemblyMaximumDatagrams = 64
    /// Bytes buffered for reassembly in all; beyond, the oldest datagrams are dropped.
    public var reassemblyMaximumBytes = 1 << 20
    /// How long an incomplete datagram is kept (RFC 1122 3.3.2 suggests 60 to 120 s; Linux uses 30 s).
    public var reassemblyTimeout = StackDuration.seconds(30)

    /// ICMP errors sent in a burst at most, and refilled per second (RFC 1122 3.2.2, RFC 1812 4.3.2.8).
    public var icmpErrorBurst = 50
    public var icmpErrorsPerSecond = 100

    /// Datagrams a UDP socket queues before dropping.
    public var udpReceiveQueueDatagrams = 256
    /// Payload bytes a UDP socket queues before dropping.
    public var udpReceiveQueueBytes = 256 << 10

    /// Multicast groups the host joins at most, each socket at most, and
    /// sources per source-specific membership (Linux: igmp_max_memberships
    /// 20 per socket, igmp_max_msf 10).
    public var multicastMaximumGroups = 256
    public var multicastMaximumGroupsPerSocket = 20
    public var multicastMaximumSourcesPerGroup = 10
    /// IGMP's robustness variable: each state change is reported this many times (RFC 3376 8.1).
    public var igmpRobustness = 2
    /// Spread of the repeated state-change reports: 1 s in version 3 (RFC 3376 8.11), 10 s in version 2 (RFC 2236 8.10).
    public var igmpUnsolicitedReportInterval = StackDuration.seconds(1)
    public var igmpVersion2UnsolicitedReportInterval = StackDuration.seconds(10)
    /// How long the host keeps speaking an older version after an older
    /// querier was heard (RFC 3376 8.12: robustness × 125 s + 10 s).
    public var igmpOlderQuerierTimeout = StackDuration.seconds(260)

    /// Transmit slots application datagrams leave free for the frames the
    /// stack sends on its own (ARP replies and announcements, echo replies,
    /// ICMP errors), so senders that keep the link full cannot starve them.
    public var transmitReserveFrames = 4

    /// A configuration with the default bounds.
    public init(mac: MACAddress, interface: IPv4Interface, gateway: IPv4Address? = nil) {
        self.mac = mac
        self.interface = interface
        self.gateway = gateway
    }

    /// The project's defaults: 192.0.2.2/24, 02:00:00:00:00:02 (DESIGN.md).
    public static let standard = StackConfiguration(
        mac: MACAddress(0x02, 0, 0, 0, 0, 0x02),
        interface: IPv4Interface(address: IPv4Address(192, 0, 2, 2), prefixLength: 24)!)
}

/// A configuration the link cannot carry.
public enum ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The MTU plus the Ethernet header exceeds the largest frame the link carries.
    case mtuTooLarge(mtu: Int, maximumFrameLength: Int)
    /// Below the 68 bytes every IPv4 host must carry (RFC 791).
    case mtuTooSmall(mtu: Int)

    public var description: String {
        switch self {
        case .mtuTooLarge(let mtu, let frame):
            "MTU \(mtu) does not fit the link's \(frame)-byte frames (at most \(frame - EthernetHeader.length))"
        case .mtuTooSmall(let mtu):
            "MTU \(mtu) is below the IPv4 minimum of 68"
        }
    }
}

extension StackConfiguration {
    /// Checks that a link whose frames are at most `maximumFrameLength` bytes can carry this configuration.
    /// - Throws: `ConfigurationError`.
    public func validate(maximumFrameLength: Int) throws(ConfigurationError) {
        guard mtu >= 68 else { throw .mtuTooSmall(mtu: mtu) }
        guard EthernetHeader.length + mtu <= maximumFrameLength else {
            throw .mtuTooLarge(mtu: mtu, maximumFrameLength: maximumFrameLength)
        }
    }
}
