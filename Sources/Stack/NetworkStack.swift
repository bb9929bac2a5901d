import SocketAPI
import Wire

/// The stack core: a single-threaded state machine for Ethernet, ARP, IPv4,
/// ICMP and UDP.
///
/// No locks, threads, clock reads or system calls: frames and the current
/// time come in as arguments, frames to send go out to the `FrameSink`.
/// Not thread-safe: the owner serialises every call (see `Sockets.NetworkHost`).
public final class NetworkStack {
    public let configuration: StackConfiguration
    /// The subnet's directed broadcast address (computed once: every datagram is checked against it).
    let subnetBroadcast: IPv4Address
    @exclusivity(unchecked) public private(set) var counters = StackCounters()
    @exclusivity(unchecked) public internal(set) var arpCache: ARPCache
    @exclusivity(unchecked) public internal(set) var reassembly: ReassemblyTable<IPv4Header>

    let sink: FrameSink
    /// Bound sockets by local port; several share a port only with reuseAddress.
    @exclusivity(unchecked) var udpEndpoints: [UInt16: [UDPEndpoint]] = [:] { didSet { endpointsVersion &+= 1 } }
    /// Changes with every bind, connect and close (see `lastDelivery`).
    @exclusivity(unchecked) var endpointsVersion: UInt64 = 0
    /// The port and socket of the last datagram delivered when that socket
    /// was the port's only one and unconnected (so it takes any datagram to
    /// the port), valid while `endpointsVersion` is unchanged.
    @exclusivity(unchecked) var lastDelivery: (port: UInt16, endpoint: UDPEndpoint, version: UInt64)?
    /// The next hop and MAC of the last send to a reachable neighbour, valid
    /// while the ARP cache's version is unchanged.
    @exclusivity(unchecked) var lastResolution: (address: IPv4Address, mac: MACAddress, version: UInt64)?
    /// ICMP error rate limit: tokens left and when they were last refilled.
    @exclusivity(unchecked) var icmpErrorTokens: Double
    @exclusivity(unchecked) var icmpErrorRefilledAt: StackInstant?
    /// Gratuitous ARP announcements still to send, and when the next is due.
    @exclusivity(unchecked) var announcementsLeft = 0
    @exclusivity(unchecked) var nextAnnouncementAt = StackInstant.zero
    @exclusivity(unchecked) var nextEndpointID = 1
    @exclusivity(unchecked) var nextIdentification: UInt16 = 1
    @exclusivity(unchecked) var nextEphemeralPort: UInt16 = NetworkStack.ephemeralPorts.lowerBound
    /// Multicast groups joined by at least one socket, and their Ethernet addresses.
    @exclusivity(unchecked) var multicastGroups: [IPv4Address: MulticastGroup] = [:]
    @exclusivity(unchecked) var multicastMACs: Set<MACAddress> = []
    /// Groups left whose leave is still being repeated.
    @exclusivity(unchecked) var leavingGroups: [MulticastGroup] = []
    /// Until when an IGMPv1 or v2 querier was heard (RFC 3376 7.2.1).
    @exclusivity(unchecked) var igmpVersion1Until: StackInstant?
    @exclusivity(unchecked) var igmpVersion2Until: StackInstant?
    /// IGMP's timer randomness (see `randomDelay`).
    @exclusivity(unchecked) var randomState: UInt64
    /// The stack's IPv6 addresses and their state (RFC 4862 5.4): tentative
    /// while duplicate address detection runs, then preferred, or duplicate.
    @exclusivity(unchecked) public internal(set) var ipv6AddressStates: [IPv6Address: IPv6AddressState] = [:]
    @exclusivity(unchecked) public internal(set) var neighborCache: NeighborCache
    @exclusivity(unchecked) public internal(set) var reassembly6: ReassemblyTable<[UInt8]>
    /// Path MTUs lowered by packet too big messages, until they expire (RFC 8201).
    @exclusivity(unchecked) var pathMTUs: [IPv6Address: (mtu: Int, validUntil: StackInstant)] = [:]
    /// The router of the latest advertisement with a lifetime (RFC 4861 6.3.4: one default router is enough here).
    @exclusivity(unchecked) public internal(set) var defaultRouter: (address: IPv6Address, validUntil: StackInstant)?
    /// Prefixes advertised as on-link, until their valid lifetime ends.
    @exclusivity(unchecked) var onLinkPrefixes: [(prefix: IPv6Address, length: Int, validUntil: StackInstant)] = []
    @exclusivity(unchecked) var routerSolicitationsLeft = 0
    @exclusivity(unchecked) var nextRouterSolicitationAt = StackInstant.zero
    @exclusivity(unchecked) var ipv6Identification: UInt32
    /// The link MTU a router advertised for IPv6 (RFC 4861 4.6.4), within 1280 and the configured MTU.
    @exclusivity(unchecked) public internal(set) var ipv6LinkMTU: Int?
    /// MLD: state-change reports still to repeat per group, and a query's pending answer (nil group: all).
    @exclusivity(unchecked) var mldPendingChanges: [IPv6Address: (joined: Bool, left: Int, dueAt: StackInstant)] = [:]
    @exclusivity(unchecked) var mldQueryAnswerAt: StackInstant?
    @exclusivity(unchecked) var mldQueriedGroup: IPv6Address?
    /// IPv6 groups sockets joined, with their member counts, and their Ethernet addresses.
    @exclusivity(unchecked) var ipv6GroupMembers: [IPv6Address: Int] = [:]
    @exclusivity(unchecked) var ipv6MulticastMACs: Set<MACAddress> = []
    /// Called when duplicate address detection finds an address in use (for a log line).
    @exclusivity(unchecked) public var onAddressConflict: ((IPv6Address) -> Void)?
    /// The latest instant a caller passed in: the time for calls that take none (close).
    @exclusivity(unchecked) var latestInstant = StackInstant.zero
    /// Earliest instant at which `advance` has work; nil when no timer runs.
    @exclusivity(unchecked) var nextTimerDeadline: StackInstant?

    /// Called for every drop with its counter and, when the drop happened
    /// while handling a received frame, that frame: a hook for debug logging.
    @exclusivity(unchecked) public var onDrop: ((StackCounter, UnsafeRawBufferPointer?) -> Void)?
    /// The frame `receive` is handling, for `onDrop`.
    @exclusivity(unchecked) var currentFrame: UnsafeRawBufferPointer?
    /// Datagrams to our own address waiting to be received (see `loopBack`).
    @exclusivity(unchecked) var loopedBack: [[UInt8]] = []
    @exclusivity(unchecked) var deliveringLoopedBack = false
    /// What the link did to that frame's transport checksum.
    @exclusivity(unchecked) var receivedChecksum: ChecksumOffload = .none

    /// Shortest Ethernet frame without FCS; shorter ones are zero-padded.
    public static let minimumFrameLength = 60

    /// IANA's dynamic range (RFC 6335), used for automatic binding.
    public static let ephemeralPorts: ClosedRange<UInt16> = 49152...65535

    /// A stack sending through `sink`.
    /// - Throws: `ConfigurationError` when the sink's frames cannot carry the configured MTU.
    public init(configuration: StackConfiguration, sink: FrameSink) throws(ConfigurationError) {
        try configuration.validate(maximumFrameLength: sink.maximumFrameLength)
        self.configuration = configuration
        subnetBroadcast = configuration.interface.subnetBroadcast
        self.sink = sink
        arpCache = ARPCache(capacity: configuration.arpCacheCapacity)
        reassembly = ReassemblyTable(maximumDatagrams: configuration.reassemblyMaximumDatagrams,
                                     maximumBytes: configuration.reassemblyMaximumBytes,
                                     timeout: configuration.reassemblyTimeout)
        neighborCache = NeighborCache(capacity: configuration.neighborCacheCapacity)
        reassembly6 = ReassemblyTable(maximumDatagrams: configuration.reassemblyMaximumDatagrams,
                                      maximumBytes: configuration.reassemblyMaximumBytes,
                                      timeout: configuration.ipv6ReassemblyTimeout)
        ipv6Identification = UInt32(truncatingIfNeeded: configuration.mac.rawValue &* 0x9E37_79B9_7F4A_7C15 >> 32)
        icmpErrorTokens = Double(configuration.icmpErrorBurst)
        randomState = (configuration.mac.rawValue ^ UInt64(configuration.interface.address.rawValue) << 16) | 1
    }

    public var address: IPv4Address { configuration.interface.address }
    public var mac: MACAddress { configuration.mac }

    /// Announces the stack on the link with gratuitous ARPs (RFC 5227 2.3):
    /// one now and the rest at `arpAnnounceInterval`, so neighbours whose
    /// link came up late still hear one.
    public func start(now: StackInstant) {
        startIPv6(now: now)
        guard configuration.resolvesLinkAddresses else { return }  // nobody to announce to without ARP
        announcementsLeft = configuration.arpAnnouncements
        nextAnnouncementAt = now
        runAnnouncements(now: now)
    }

    func runAnnouncements(now: StackInstant) {
        guard announcementsLeft > 0 else { return }
        if nextAnnouncementAt <= now {
            sendARP(operation: .request, targetMAC: .zero, targetIP: address, to: .broadcast)
            announcementsLeft -= 1
            nextAnnouncementAt = now + configuration.arpAnnounceInterval
        }
        if announcementsLeft > 0 { schedule(nextAnnouncementAt) }
    }

    /// Processes one received Ethernet frame. The bytes are only borrowed.
    /// `checksum` is what the link did to its transport checksum
    /// (`.verified`: vouched for it, so it is not verified here).
    public func receive(frame: UnsafeRawBufferPointer, checksum: ChecksumOffload = .none, now: StackInstant) {
        counters.increment(.ethernetRxFrames)
        latestInstant = now
        currentFrame = frame
        receivedChecksum = checksum
        defer { currentFrame = nil; receivedChecksum = .none }
        let ethernet: EthernetFrameView
        do { ethernet = try EthernetFrameView(frame) } catch { return drop(.ethernetDropTruncated) }
        let destination = ethernet.destination
        let addressed = configuration.resolvesLinkAddresses
        guard !addressed || destination == mac || destination.isBroadcast || acceptsMulticast(destination)
                || acceptsIPv6Multicast(destination) else {
            return drop(.ethernetDropNotForUs)
        }
        switch ethernet.etherType {
        case .arp where addressed: receiveARP(ethernet.payload, now: now)
        case .ipv4: receiveIPv4(ethernet.payload, linkBroadcast: addressed && (destination.isBroadcast || destination.isMulticast), now: now)
        case .ipv6: receiveIPv6(ethernet.payload, linkMulticast: addressed && destination.isMulticast, now: now)
        default: drop(.ethernetDropUnknownEtherType)
        }
    }

    /// When the timers next need to run, or nil when none is pending.
    public var nextDeadline: StackInstant? { nextTimerDeadline }

    /// Runs the timers due at `now`. Returns when it next needs to run, or nil.
    @discardableResult
    public func advance(to now: StackInstant) -> StackInstant? {
        latestInstant = now
        if let deadline = nextTimerDeadline, deadline <= now {
            nextTimerDeadline = nil
            runAnnouncements(now: now)
            runARPTimers(now: now)
            runReassemblyTimers(now: now)
            runIGMPTimers(now: now)
            runDuplicateAddressDetection(now: now)
            runNeighborTimers(now: now)
            runMLDTimers(now: now)
            runRouterSolicitations(now: now)
        }
        return nextTimerDeadline
    }

    /// A multicast Ethernet address of a joined group, or of 224.0.0.1
    /// (RFC 1112 6.4: the host filters on the groups it belongs to).
    @inline(__always)
    func acceptsMulticast(_ destination: MACAddress) -> Bool {
        destination.isMulticast && (destination == IPv4Address.allHosts.multicastMAC || multicastMACs.contains(destination))
    }

    // MARK: Shared plumbing

    /// Counts a drop: the one path every drop takes.
    @inline(__always)
    func drop(_ reason: StackCounter) {
        counters.increment(reason)
        onDrop?(reason, currentFrame)
    }

    @inline(__always)
    func count(_ counter: StackCounter) { counters.increment(counter) }

    /// The Ethernet source of the frame being handled (.zero outside one).
    var frameSourceMAC: MACAddress {
        guard let frame = currentFrame, frame.count >= EthernetHeader.length else { return .zero }
        return MACAddress(reading: frame, at: 6)
    }

    func schedule(_ deadline: StackInstant) {
        if let current = nextTimerDeadline, current <= deadline { return }
        nextTimerDeadline = deadline
    }

    /// Builds one IP packet of either family in the link's next frame: the
    /// Ethernet header, the payload `fill` writes (told to leave the transport
    /// checksum partial when the sink completes checksums), then the IP header
    /// `emitHeader` writes over the first `headerLength` bytes. The caller
    /// has checked the link has room.
    @inline(__always)
    func transmitInPlace(to destinationMAC: MACAddress, etherType: EtherType, headerLength: Int, packetLength: Int,
                         transportChecksumOffset: Int?, emitHeader: (UnsafeMutableRawBufferPointer) -> Void,
                         fill: (UnsafeMutableRawBufferPointer, _ partialChecksum: Bool) -> Void) {
        var offload = ChecksumOffload.none
        if let transportChecksumOffset, sink.completesChecksums {
            offload = .partial(start: UInt16(EthernetHeader.length + headerLength), offset: UInt16(transportChecksumOffset))
        }
        _ = transmitFrame(checksum: offload) { frame in
            EthernetHeader(destination: destinationMAC, source: mac, etherType: etherType).emit(into: frame)
            let ip = UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length..<(EthernetHeader.length + packetLength)])
            fill(UnsafeMutableRawBufferPointer(rebasing: ip[headerLength...]), offload != .none)
            emitHeader(ip)
            return EthernetHeader.length + packetLength
        }
    }

    /// Reserves a frame, lets `fill` write it and return its length, commits
    /// it with `checksum` (`.partial` when `fill` left it to the link).
    /// Returns false (nothing sent) when the link is full.
    @inline(__always)
    func transmitFrame(checksum: ChecksumOffload = .none, _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard let buffer = sink.reserveFrame() else { return false }
        var length = fill(buffer)
        precondition(length <= buffer.count, "a \(length)-byte frame in a \(buffer.count)-byte buffer")
        if length < Self.minimumFrameLength {
            // Pad to Ethernet's 60-byte minimum, as a NIC would (IEEE 802.3).
            (buffer.baseAddress! + length).initializeMemory(as: UInt8.self, repeating: 0, count: Self.minimumFrameLength - length)
            length = Self.minimumFrameLength
        }
        sink.commitFrame(length: length, checksum: checksum)
        count(.ethernetTxFrames)
        return true
    }
}
