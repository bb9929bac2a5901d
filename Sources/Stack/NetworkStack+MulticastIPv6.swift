import SocketAPI
import Wire

// IPv6 multicast for sockets (RFC 4291 2.7, RFC 3493 5.2): any-source
// memberships per socket (IPV6_JOIN_GROUP), reported with MLDv2 as the
// solicited-node groups are, datagrams to a joined group delivered to the
// sockets on its port that joined it, sends to a group with the multicast
// hop limit and, with IPV6_MULTICAST_LOOP, to our own members too.
extension NetworkStack {
    /// Groups joined by at least one socket, with how many.
    public var joinedIPv6Groups: [IPv6Address] {
        ipv6GroupMembers.keys.sorted { ($0.high, $0.low) < ($1.high, $1.low) }
    }

    /// Joins `group` for `endpoint` (an IPv6 socket).
    /// - Throws: `.invalidArgument` (an IPv4 socket, or not a multicast
    ///   address); `.addressInUse` (joined already, EADDRINUSE as Linux);
    ///   `.noBufferSpace` beyond the bounds per socket or in all; `.closed`.
    public func join(_ group: IPv6Address, for endpoint: UDPEndpoint, now: StackInstant) throws(SocketError) {
        guard !endpoint.isClosed else { throw .closed }
        guard endpoint.family == .ipv6, group.isMulticast else { throw .invalidArgument }
        guard !endpoint.memberships6.contains(group) else { throw .addressInUse }
        guard endpoint.memberships6.count < configuration.multicastMaximumGroupsPerSocket else { throw .noBufferSpace }
        let members = ipv6GroupMembers[group] ?? 0
        guard members > 0 || ipv6GroupMembers.count < configuration.multicastMaximumGroups else {
            count(.igmpDropGroupLimit)
            throw .noBufferSpace
        }
        let reported = listenedGroups.contains(group)
        endpoint.memberships6.insert(group)
        ipv6GroupMembers[group] = members + 1
        ipv6MulticastMACs.insert(group.multicastMAC)
        if !reported && Self.isReportable(group) { mldStateChanged(group, joined: true, now: now) }
    }

    /// Leaves `group` for `endpoint`; the host leaves when its last socket does.
    /// - Throws: `.addressNotAvailable` when not joined (EADDRNOTAVAIL, as Linux).
    public func leave(_ group: IPv6Address, for endpoint: UDPEndpoint, now: StackInstant) throws(SocketError) {
        guard endpoint.memberships6.remove(group) != nil else { throw .addressNotAvailable }
        let members = (ipv6GroupMembers[group] ?? 1) - 1
        ipv6GroupMembers[group] = members > 0 ? members : nil
        guard members == 0 else { return }
        ipv6MulticastMACs = Set(ipv6GroupMembers.keys.map(\.multicastMAC))
        if !listenedGroups.contains(group) && Self.isReportable(group) { mldStateChanged(group, joined: false, now: now) }
    }

    /// Every IPv6 membership of a closing socket.
    func leaveAllIPv6(for endpoint: UDPEndpoint, now: StackInstant) {
        for group in endpoint.memberships6 { try? leave(group, for: endpoint, now: now) }
    }

    /// RFC 3810 6: never reported: ff02::1, and interface- or reserved-scope groups.
    static func isReportable(_ group: IPv6Address) -> Bool {
        group != .allNodes && (group.high >> 48) & 0xF > 1
    }

    /// A datagram to a joined group goes to each IPv6 socket on its port
    /// that joined it (and takes its source). False when none did.
    func deliverMulticast(_ udp: UDPDatagramView, from datagram: IPv6Datagram, now: StackInstant) -> Bool {
        var delivered = false
        for endpoint in udpEndpoints[udp.destinationPort] ?? [] where endpoint.family == .ipv6
            && endpoint.memberships6.contains(datagram.destination)
            && (endpoint.remote6 == nil || (endpoint.remote6!.address == datagram.source && endpoint.remote6!.port == udp.sourcePort)) {
            enqueue(udp, from: datagram, on: endpoint, now: now)
            delivered = true
        }
        return delivered
    }
}
