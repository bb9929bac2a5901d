import SocketAPI
import Wire

/// A group the host belongs to because at least one socket joined it, with
/// its IGMP state.
final class MulticastGroup {
    let address: IPv4Address
    /// Sockets holding the group.
    var members: [UDPEndpoint] = []
    /// When the answer to a query is due; nil when none is pending.
    var reportDue: StackInstant?
    /// Unsolicited reports of the last state change still to send (RFC 3376 5.1: robustness times).
    var changesLeft = 0
    var nextChangeAt = StackInstant.zero
    /// The state change being repeated: joined (true) or left (false).
    var changeIsJoin = true

    init(address: IPv4Address) { self.address = address }

    /// The host's filter for the group (RFC 3376 3.2): exclude-nothing when
    /// any socket joined for every source, else include the union of the
    /// sources the sockets asked for.
    var filter: (exclude: Bool, sources: [IPv4Address]) {
        var sources = Set<IPv4Address>()
        for member in members {
            guard let asked = member.memberships[address] else { continue }
            guard let asked else { return (true, []) }
            sources.formUnion(asked)
        }
        return (false, sources.sorted { $0.rawValue < $1.rawValue })
    }

    func accepts(source: IPv4Address, for endpoint: UDPEndpoint) -> Bool {
        guard let asked = endpoint.memberships[address] else { return false }
        return asked?.contains(source) ?? true
    }
}

// IPv4 multicast (RFC 1112) with IGMPv1/v2/v3 host behaviour (RFC 2236,
// RFC 3376): memberships per socket, reports on joins and leaves, answers to
// queries at a random delay within their maximum response time.
extension NetworkStack {
    /// Groups the host belongs to, for tests and `ss`.
    public var joinedGroups: [IPv4Address] { multicastGroups.keys.sorted { $0.rawValue < $1.rawValue } }

    /// The IGMP version the host speaks now: 3 unless an older querier was
    /// heard within the last `igmpOlderQuerierTimeout` (RFC 3376 7.2.1).
    public func igmpVersion(now: StackInstant) -> Int {
        if let until = igmpVersion1Until, now < until { return 1 }
        if let until = igmpVersion2Until, now < until { return 2 }
        return 3
    }

    /// Joins `group` for `endpoint`, for every source (`sources` nil) or
    /// only those in `sources` (IP_ADD_SOURCE_MEMBERSHIP, added to any
    /// already asked for).
    /// - Throws: `.invalidArgument` for a non-multicast address or a source
    ///   join on an any-source membership; `.addressInUse` when the
    ///   any-source membership exists (EADDRINUSE, as Linux); `.noBufferSpace`
    ///   beyond the bounds per socket, per group's sources, or in all.
    public func join(_ group: IPv4Address, for endpoint: UDPEndpoint, sources: [IPv4Address]? = nil,
                     now: StackInstant) throws(SocketError) {
        guard !endpoint.isClosed else { throw .closed }
        guard group.isMulticast else { throw .invalidArgument }
        let existing = endpoint.memberships[group]
        if let existing {
            guard let sources else { throw .addressInUse }
            guard var included = existing else { throw .invalidArgument }
            included.formUnion(sources)
            guard included.count <= configuration.multicastMaximumSourcesPerGroup else { throw .noBufferSpace }
            endpoint.memberships[group] = .some(included)
            groupChanged(group, joined: true, now: now)
            return
        }
        guard endpoint.memberships.count < configuration.multicastMaximumGroupsPerSocket else { throw .noBufferSpace }
        if let sources, sources.count > configuration.multicastMaximumSourcesPerGroup { throw .noBufferSpace }
        let record = multicastGroups[group]
        guard record != nil || multicastGroups.count < configuration.multicastMaximumGroups else {
            count(.igmpDropGroupLimit)
            throw .noBufferSpace
        }
        // `.some`: assigning a nil value would remove the key instead of storing "every source".
        endpoint.memberships[group] = .some(sources.map { Set($0) })
        let joined = record ?? MulticastGroup(address: group)
        joined.members.append(endpoint)
        if record == nil {
            leavingGroups.removeAll { $0.address == group }  // joined again: its leave is no longer news
            multicastGroups[group] = joined
            multicastMACs.insert(group.multicastMAC)
        }
        groupChanged(group, joined: true, now: now)
    }

    /// Leaves `group` for `endpoint`: every source (`sources` nil), or those
    /// sources only (IP_DROP_SOURCE_MEMBERSHIP). The host leaves when its
    /// last socket does.
    /// - Throws: `.addressNotAvailable` when the socket had not joined (EADDRNOTAVAIL, as Linux).
    public func leave(_ group: IPv4Address, for endpoint: UDPEndpoint, sources: [IPv4Address]? = nil,
                      now: StackInstant) throws(SocketError) {
        guard let existing = endpoint.memberships[group] else { throw .addressNotAvailable }
        if let sources {
            guard var included = existing else { throw .invalidArgument }
            guard !included.isDisjoint(with: sources) else { throw .addressNotAvailable }
            included.subtract(sources)
            if !included.isEmpty {
                endpoint.memberships[group] = .some(included)
                groupChanged(group, joined: true, now: now)
                return
            }
        }
        endpoint.memberships[group] = nil
        guard let record = multicastGroups[group] else { return }
        record.members.removeAll { $0 === endpoint }
        if record.members.isEmpty {
            multicastGroups[group] = nil
            multicastMACs = Set(multicastGroups.keys.map(\.multicastMAC))
            sendStateChange(for: record, joined: false, now: now)
            record.changesLeft = configuration.igmpRobustness - 1
            // The leave's repetitions run from a record no longer in the table.
            if record.changesLeft > 0, igmpVersion(now: now) == 3 {
                record.nextChangeAt = now + randomDelay(upTo: configuration.igmpUnsolicitedReportInterval)
                // Bounded like the groups themselves: under a flood of joins
                // and leaves the oldest repetitions give way (counted).
                leavingGroups.removeAll { $0.address == record.address }
                if leavingGroups.count >= configuration.multicastMaximumGroups {
                    leavingGroups.removeFirst()
                    count(.igmpTxLeaveRepeatsDropped)
                }
                leavingGroups.append(record)
                schedule(record.nextChangeAt)
            }
        } else {
            groupChanged(group, joined: true, now: now)
        }
    }

    /// Drops every membership of a closing socket.
    func leaveAll(for endpoint: UDPEndpoint, now: StackInstant) {
        for group in Array(endpoint.memberships.keys) { try? leave(group, for: endpoint, now: now) }
    }

    /// A socket's join changed the host's state for `group`: report it now
    /// and robustness − 1 more times (RFC 3376 5.1, RFC 2236 3).
    func groupChanged(_ group: IPv4Address, joined: Bool, now: StackInstant) {
        guard let record = multicastGroups[group], group != .allHosts else { return }
        sendStateChange(for: record, joined: joined, now: now)
        record.changesLeft = configuration.igmpRobustness - 1
        record.changeIsJoin = joined
        if record.changesLeft > 0 {
            let interval = igmpVersion(now: now) == 3 ? configuration.igmpUnsolicitedReportInterval : configuration.igmpVersion2UnsolicitedReportInterval
            record.nextChangeAt = now + randomDelay(upTo: interval)
            schedule(record.nextChangeAt)
        }
    }

    func sendStateChange(for record: MulticastGroup, joined: Bool, now: StackInstant) {
        guard record.address != .allHosts else { return }
        switch igmpVersion(now: now) {
        case 1:
            if joined { sendIGMP(.version2(group: record.address), version1: true) }
        case 2:
            sendIGMP(joined ? .version2(group: record.address) : .leave(group: record.address))
        default:
            let filter = record.filter
            let type: UInt8
            if !joined { type = IGMPRecordType.changeToInclude } else { type = filter.exclude ? IGMPRecordType.changeToExclude : IGMPRecordType.changeToInclude }
            sendIGMP(.version3(records: [IGMPGroupRecord(type: type, group: record.address, sources: joined ? filter.sources : [])]))
        }
    }

    /// The current-state record of a group (RFC 3376 5.2).
    func currentState(of record: MulticastGroup) -> IGMPGroupRecord {
        let filter = record.filter
        return IGMPGroupRecord(type: filter.exclude ? IGMPRecordType.modeIsExclude : IGMPRecordType.modeIsInclude,
                               group: record.address, sources: filter.sources)
    }

    // MARK: Receiving

    func receiveIGMP(_ packet: IPv4PacketView, now: StackInstant) {
        count(.igmpRxMessages)
        let message: IGMPMessageView
        do { message = try IGMPMessageView(packet.payload) } catch {
            return drop(error == .badLength ? .igmpDropBadLength : .igmpDropTruncated)
        }
        guard message.checksumIsValid else { return drop(.igmpDropBadChecksum) }
        switch message.type {
        case IGMPType.membershipQuery:
            receiveQuery(message, destination: packet.destination, now: now)
        case IGMPType.version1Report, IGMPType.version2Report:
            count(.igmpRxReports)
            // RFC 2236 3: another member's report stands for ours (not in version 3 mode, RFC 3376 5).
            if igmpVersion(now: now) < 3, let record = multicastGroups[message.group] { record.reportDue = nil }
        case IGMPType.leaveGroup, IGMPType.version3Report:
            count(.igmpRxReports)
        default:
            drop(.igmpDropUnknownType)
        }
    }

    func receiveQuery(_ query: IGMPMessageView, destination: IPv4Address, now: StackInstant) {
        let group = query.group
        guard group.isUnspecified || group.isMulticast else { return drop(.igmpDropBadQuery) }
        // RFC 3376 4.1.12 / RFC 2236 2: a general query goes to 224.0.0.1, a group-specific one to the group.
        guard group.isUnspecified ? destination == .allHosts : destination == group else { return drop(.igmpDropBadQuery) }
        count(.igmpRxQueries)
        switch query.queryVersion {
        case 1: igmpVersion1Until = now + configuration.igmpOlderQuerierTimeout
        case 2: igmpVersion2Until = now + configuration.igmpOlderQuerierTimeout
        default: break
        }
        // Answer at a random moment within the maximum response time (at least 0.1 s to choose from).
        let window = StackDuration.milliseconds(max(query.maxResponseDeciseconds, 1) * 100)
        let due = now + randomDelay(upTo: window)
        let targets = group.isUnspecified ? Array(multicastGroups.values) : multicastGroups[group].map { [$0] } ?? []
        for record in targets where record.address != .allHosts {
            if let pending = record.reportDue, pending <= due { continue }
            record.reportDue = due
            schedule(due)
        }
    }

    // MARK: Timers and sending

    func runIGMPTimers(now: StackInstant) {
        let version = igmpVersion(now: now)
        var answers: [IGMPGroupRecord] = []
        for record in multicastGroups.values.sorted(by: { $0.address.rawValue < $1.address.rawValue }) {
            if let due = record.reportDue {
                if due <= now {
                    record.reportDue = nil
                    if version == 3 { answers.append(currentState(of: record)) } else { sendIGMP(.version2(group: record.address), version1: version == 1) }
                } else {
                    schedule(due)
                }
            }
            repeatStateChange(record, now: now)
        }
        // Version 3 answers due together go in one report.
        var report: [IGMPGroupRecord] = []
        var length = 8
        for record in answers {
            // Each report fits the MTU (RFC 3376 5.2: split over several).
            if !report.isEmpty && IGMPReport.ipHeaderLength + length + record.length > configuration.mtu {
                sendIGMP(.version3(records: report))
                report = []
                length = 8
            }
            report.append(record)
            length += record.length
        }
        if !report.isEmpty { sendIGMP(.version3(records: report)) }
        for record in leavingGroups { repeatStateChange(record, now: now) }
        leavingGroups.removeAll { $0.changesLeft == 0 }
    }

    private func repeatStateChange(_ record: MulticastGroup, now: StackInstant) {
        guard record.changesLeft > 0 else { return }
        guard record.nextChangeAt <= now else { return schedule(record.nextChangeAt) }
        record.changesLeft -= 1
        sendStateChange(for: record, joined: record.changeIsJoin && multicastGroups[record.address] === record, now: now)
        if record.changesLeft > 0 {
            record.nextChangeAt = now + randomDelay(upTo: configuration.igmpUnsolicitedReportInterval)
            schedule(record.nextChangeAt)
        }
    }

    /// Sends an IGMP message with TTL 1 and the Router Alert option (RFC 2236 2, RFC 3376 4).
    func sendIGMP(_ report: IGMPReport, version1: Bool = false) {
        let packetLength = IGMPReport.ipHeaderLength + report.length
        guard packetLength <= configuration.mtu else { return drop(.igmpTxDropTooBig) }
        let sent = transmitFrame { frame in
            EthernetHeader(destination: report.destination.multicastMAC, source: mac, etherType: .ipv4).emit(into: frame)
            let ip = UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length...])
            return EthernetHeader.length + report.emitPacket(into: ip, source: address, identification: takeIdentification(),
                                                             version1: version1)
        }
        guard sent else { return drop(.ethernetTxDropLinkFull) }
        count(.ipv4TxPackets)
        if case .leave = report { count(.igmpTxLeaves) } else { count(.igmpTxReports) }
    }

    /// A uniformly random delay in [0, `limit`): IGMP's timers must not
    /// synchronise hosts (RFC 2236 3). xorshift64*, seeded from the MAC.
    func randomDelay(upTo limit: StackDuration) -> StackDuration {
        randomState ^= randomState >> 12
        randomState ^= randomState << 25
        randomState ^= randomState >> 27
        let value = randomState &* 0x2545_F491_4F6C_DD1D
        return StackDuration(nanoseconds: limit.nanoseconds == 0 ? 0 : value % limit.nanoseconds)
    }

    /// True when the host receives `destination` (a multicast address): it
    /// belongs to the group, or it is 224.0.0.1.
    func receivesMulticast(_ destination: IPv4Address) -> Bool {
        destination == .allHosts || multicastGroups[destination] != nil
    }

    /// Delivers a multicast datagram to every socket on its port that joined
    /// the group for its source (RFC 1112 7.2). False when none did.
    func deliverMulticast(_ datagram: UDPDatagramView, from packet: IPv4PacketView, now: StackInstant) -> Bool {
        guard let record = multicastGroups[packet.destination] else { return false }
        var delivered = false
        for endpoint in record.members where endpoint.localPort == datagram.destinationPort
            && (endpoint.localAddress.isUnspecified || endpoint.localAddress == packet.destination)
            && record.accepts(source: packet.source, for: endpoint) {
            enqueue(datagram, from: packet, on: endpoint, now: now)
            delivered = true
        }
        return delivered
    }
}
