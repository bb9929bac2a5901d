import Wire

// Multicast Listener Discovery version 2 (RFC 3810) for the groups the stack
// itself must listen on: its addresses' solicited-node groups (RFC 4861
// 7.2.1). Switches that snoop MLD forward neighbour solicitations only to
// ports that reported the group; without these reports, address resolution
// of the stack fails behind such a switch. Reports are repeated robustness
// times on a change (RFC 3810 6.1), and queries are answered within their
// maximum response delay (6.2). All-nodes (ff02::1) is never reported (6).
extension NetworkStack {
    /// MLDv2 report type (RFC 3810 5.2), query type (5.1) and the group reports go to.
    static let mldQueryType: UInt8 = 130
    static let mldReportType: UInt8 = 143
    static let allMLDv2Routers = IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x16)

    /// Multicast address record types (RFC 3810 5.2.12).
    enum MLDRecord: UInt8 {
        case modeIsExclude = 2
        case changeToInclude = 3
        case changeToExclude = 4
    }

    /// The groups the stack listens on and reports: one solicited-node group
    /// per address held (tentative or in use), and those its sockets joined.
    var listenedGroups: [IPv6Address] {
        Set(ipv6AddressStates.filter { $0.value != .duplicate }.keys.map(\.solicitedNode))
            .union(ipv6GroupMembers.keys.filter(Self.isReportable))
            .sorted { ($0.high, $0.low) < ($1.high, $1.low) }
    }

    /// A group joined or left: reported now and again robustness - 1 times (RFC 3810 6.1).
    func mldStateChanged(_ group: IPv6Address, joined: Bool, now: StackInstant) {
        guard configuration.resolvesLinkAddresses && configuration.reportsMulticastListening else { return }
        mldPendingChanges[group] = (joined, configuration.igmpRobustness, now)
        runMLDTimers(now: now)
    }

    func runMLDTimers(now: StackInstant) {
        for (group, change) in mldPendingChanges.sorted(by: { ($0.key.high, $0.key.low) < ($1.key.high, $1.key.low) }) {
            guard change.dueAt <= now else { schedule(change.dueAt); continue }
            sendMLDReport([(change.joined ? .changeToExclude : .changeToInclude, group)])
            if change.left > 1 {
                let next = now + randomDelay(upTo: configuration.igmpUnsolicitedReportInterval)
                mldPendingChanges[group] = (change.joined, change.left - 1, next)
                schedule(next)
            } else {
                mldPendingChanges[group] = nil
            }
        }
        if let due = mldQueryAnswerAt {
            guard due <= now else { return schedule(due) }
            mldQueryAnswerAt = nil
            let groups = mldQueriedGroup.map { [$0] } ?? listenedGroups
            if !groups.isEmpty { sendMLDReport(groups.map { (.modeIsExclude, $0) }) }
        }
    }

    /// RFC 3810 5.1 and 6.2: a query from a link-local router at hop limit
    /// 1 is answered with the current state, at a random delay within its
    /// maximum response delay; a general query covers every group.
    func receiveMLDQuery(_ datagram: IPv6Datagram, now: StackInstant) {
        count(.icmpv6RxMldQueries)
        guard configuration.reportsMulticastListening else { return }
        let message = datagram.payload
        guard datagram.hopLimit == 1, datagram.source.isLinkLocal, message.count >= 24 else {
            return drop(.icmpv6DropInvalidMld)
        }
        let group = IPv6Address(reading: message, at: 8)
        if !group.isUnspecified && !listenedGroups.contains(group) { return }  // about another group
        // Maximum Response Code in milliseconds; the exponential form above 32768 (5.1.3).
        let code = Int(message.u16(at: 4))
        let milliseconds = code < 32768 ? code : ((code & 0x0FFF) | 0x1000) << (((code >> 12) & 0x7) + 3)
        let due = now + randomDelay(upTo: .milliseconds(max(milliseconds, 1)))
        // One pending answer: a general query widens a group-specific one.
        if mldQueryAnswerAt == nil || group.isUnspecified { mldQueriedGroup = group.isUnspecified ? nil : group }
        if let pending = mldQueryAnswerAt, pending <= due { return }
        mldQueryAnswerAt = due
        schedule(due)
    }

    /// One MLDv2 report: hop limit 1, a hop-by-hop Router Alert (RFC 2711,
    /// value 0: MLD), to ff02::16 from the link-local address, or from ::
    /// while that is still being checked (RFC 3590).
    func sendMLDReport(_ records: [(MLDRecord, IPv6Address)]) {
        let source = isOurIPv6Address(linkLocalAddress) ? linkLocalAddress : IPv6Address.unspecified
        let destination = Self.allMLDv2Routers
        let hopByHop: [UInt8] = [IPv6NextHeader.icmpv6, 0, 5, 2, 0, 0, 1, 0]  // Router Alert MLD, PadN
        let messageLength = 8 + 20 * records.count
        let payloadLength = hopByHop.count + messageLength
        guard IPv6Header.length + payloadLength <= configuration.mtu else { return drop(.icmpv6TxDropTooBig) }
        let sent = transmitFrame { frame in
            EthernetHeader(destination: destination.multicastMAC, source: mac, etherType: .ipv6).emit(into: frame)
            let ip = UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length...])
            IPv6Header(payloadLength: payloadLength, nextHeader: IPv6NextHeader.hopByHopOptions, hopLimit: 1,
                       source: source, destination: destination).emit(into: ip)
            for (index, byte) in hopByHop.enumerated() { ip[IPv6Header.length + index] = byte }
            let start = IPv6Header.length + hopByHop.count
            let message = UnsafeMutableRawBufferPointer(rebasing: ip[start..<(start + messageLength)])
            message[0] = Self.mldReportType
            message[1] = 0
            message.setU16(0, at: 2)
            message.setU16(0, at: 4)
            message.setU16(UInt16(records.count), at: 6)
            for (index, (type, group)) in records.enumerated() {
                let at = 8 + 20 * index
                message[at] = type.rawValue
                message[at + 1] = 0
                message.setU16(0, at: at + 2)
                group.write(to: message, at: at + 4)
            }
            message.setU16(ICMPv6Type.checksum(UnsafeRawBufferPointer(message), source: source, destination: destination), at: 2)
            return EthernetHeader.length + IPv6Header.length + payloadLength
        }
        if sent {
            count(.ipv6TxPackets)
            count(.icmpv6TxMldReports)
        } else {
            drop(.ethernetTxDropLinkFull)
        }
    }
}
