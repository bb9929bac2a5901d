import SocketAPI
import Wire

// ICMPv6 (RFC 4443): echo, errors sent with their suppression rules and
// rate limit, errors received (path MTU, sockets); neighbour discovery
// messages are handed to +NDP.
extension NetworkStack {
    func receiveICMPv6(_ datagram: IPv6Datagram, now: StackInstant) {
        count(.icmpv6RxMessages)
        let message = datagram.payload
        guard message.count >= 4 else { return drop(.icmpv6DropTruncated) }
        guard ICMPv6Type.checksum(message, source: datagram.source, destination: datagram.destination) == 0 else {
            return drop(.icmpv6DropBadChecksum)
        }
        // Only neighbour discovery is answered for an address still being checked (RFC 4862 5.4).
        if case .tentative = ipv6AddressStates[datagram.destination],
           message[0] != ICMPv6Type.neighborSolicitation && message[0] != ICMPv6Type.neighborAdvertisement {
            return drop(.ipv6DropNotForUs)
        }
        switch message[0] {
        case ICMPv6Type.echoRequest:
            count(.icmpv6RxEchoRequests)
            // RFC 4443 4.1: answer echoes to our unicast address; multicast ones may be ignored, as Linux does by default.
            guard isOurIPv6Address(datagram.destination), message.count >= 8 else { return drop(.icmpv6DropUnhandledType) }
            answerEcho(datagram, now: now)
        case ICMPv6Type.echoReply:
            count(.icmpv6RxEchoReplies)
        case ICMPv6Type.neighborSolicitation:
            receiveNeighborSolicitation(datagram)
        case ICMPv6Type.neighborAdvertisement:
            receiveNeighborAdvertisement(datagram)
        case ICMPv6Type.routerAdvertisement:
            receiveRouterAdvertisement(datagram, now: now)
        case Self.mldQueryType:
            receiveMLDQuery(datagram, now: now)
        case Self.mldReportType, 131, 132:
            break  // other listeners' reports and dones: nothing to do (MLDv2 hosts do not suppress theirs)
        case let type where ICMPv6Type.isError(type):
            count(.icmpv6RxErrors)
            receiveICMPv6Error(datagram, now: now)
        default:
            drop(.icmpv6DropUnhandledType)
        }
    }

    /// The reply carries the request's identifier, sequence and data, from
    /// the address asked, fragmented when the request was larger than the MTU.
    func answerEcho(_ request: IPv6Datagram, now: StackInstant) {
        let message = request.payload
        do {
            try sendIPv6(nextHeader: ICMPv6Type.nextHeader, from: request.destination, to: request.source,
                         payloadLength: message.count, trafficClass: request.trafficClass, now: now) { buffer, _ in
                buffer.copyMemory(from: message)
                buffer[0] = ICMPv6Type.echoReply
                buffer.setU16(0, at: 2)
                buffer.setU16(ICMPv6Type.checksum(UnsafeRawBufferPointer(buffer), source: request.destination,
                                                  destination: request.source), at: 2)
            }
            count(.icmpv6TxEchoReplies)
        } catch .wouldBlock {
            drop(.ethernetTxDropLinkFull)
        } catch {
            drop(.ipv6TxDropNoRoute)
        }
    }

    /// An error about a packet we sent: packet too big lowers the path MTU
    /// (RFC 8201); port and other unreachables go to the connected UDP socket
    /// the datagram came from, as for IPv4.
    func receiveICMPv6Error(_ datagram: IPv6Datagram, now: StackInstant) {
        let message = datagram.payload
        guard message.count >= 8 + IPv6Header.length else { return drop(.icmpv6DropTruncated) }
        let quote = UnsafeRawBufferPointer(rebasing: message[8...])
        let quotedSource = IPv6Address(reading: quote, at: IPv6PacketView.Field.source)
        let quotedDestination = IPv6Address(reading: quote, at: IPv6PacketView.Field.destination)
        guard ipv6AddressStates[quotedSource] != nil else { return count(.icmpv6RxErrorsUnmatched) }
        let tooBig = message[0] == ICMPv6Type.packetTooBig
        if tooBig {
            count(.icmpv6RxPacketTooBig)
            learnPathMTU(Int(message.u32(at: 4)), to: quotedDestination, now: now)
        }
        // The quoted UDP header, when it follows the IPv6 header directly.
        guard quote[IPv6PacketView.Field.nextHeader] == IPv6NextHeader.udp, quote.count >= IPv6Header.length + 4,
              let error = socketError(forICMPv6Type: message[0], code: message[1]) else {
            return count(tooBig ? .icmpv6RxErrorsDelivered : .icmpv6RxErrorsUnmatched)
        }
        let localPort = quote.u16(at: IPv6Header.length)
        let remotePort = quote.u16(at: IPv6Header.length + 2)
        // As for IPv4: the connected socket the datagram came from, and any
        // unconnected one on the port that asked for its errors (IPV6_RECVERR);
        // packet too big is news only for the latter (the path MTU took it).
        let connected = udpEndpoints[localPort]?.first { $0.remote6?.address == quotedDestination && $0.remote6?.port == remotePort }
        let listening = (udpEndpoints[localPort] ?? []).filter { $0.family == .ipv6 && $0.receivesErrors && $0.remote6 == nil }
        var targets = listening
        if let connected {
            if connected.receivesErrors { targets.append(connected) } else if !tooBig { connected.report(error) }
        }
        guard connected != nil || !targets.isEmpty else { return count(tooBig ? .icmpv6RxErrorsDelivered : .icmpv6RxErrorsUnmatched) }
        count(.icmpv6RxErrorsDelivered)
        let after = IPv6Header.length + UDPHeader.length
        let payload = quote.count > after ? Array(quote[after..<min(quote.count, after + ICMPErrorReport.quotedPayloadLimit)]) : []
        var details = ICMPErrorReport(error: error, type: message[0], code: message[1],
                                      info: tooBig || message[0] == ICMPv6Type.parameterProblem ? message.u32(at: 4) : 0,
                                      offender: .any, destination: .any, destinationPort: remotePort, payload: payload)
        details.offender6 = datagram.source
        details.destination6 = quotedDestination
        for endpoint in targets where !endpoint.queue(details) { drop(.udpDropErrorQueueFull) }
    }

    /// The POSIX error an ICMPv6 error means to a socket, as Linux maps them (icmpv6_err_convert).
    func socketError(forICMPv6Type type: UInt8, code: UInt8) -> SocketError? {
        switch (type, code) {
        case (ICMPv6Type.destinationUnreachable, ICMPv6Type.UnreachableCode.port): .connectionRefused
        case (ICMPv6Type.destinationUnreachable, ICMPv6Type.UnreachableCode.noRoute): .networkUnreachable
        case (ICMPv6Type.destinationUnreachable, _): .hostUnreachable
        case (ICMPv6Type.timeExceeded, _): .hostUnreachable
        case (ICMPv6Type.packetTooBig, _): .messageTooLong
        default: nil
        }
    }

    /// RFC 4443 2.4 (e): no error about an ICMPv6 error or a redirect, about
    /// a packet to a multicast address or sent as link-layer multicast (but
    /// packet too big and an unknown option whose type asks for one are sent
    /// anyway, `evenToMulticast`), or from a source that names no single host.
    func shouldSendICMPv6Error(about datagram: IPv6Datagram, evenToMulticast: Bool) -> Bool {
        if (datagram.destination.isMulticast || datagram.linkMulticast) && !evenToMulticast { return false }
        let source = datagram.source
        if source.isUnspecified || source.isMulticast || source.isLoopback || isOurIPv6Address(source) { return false }
        if let (next, offset) = IPv6NextHeader.upperLayer(of: datagram.packet), next == IPv6NextHeader.icmpv6, offset < datagram.packet.count {
            let type = datagram.packet[offset]
            if ICMPv6Type.isError(type) || type == 137 { return false }
        }
        return true
    }

    /// Sends an error about `datagram` (the invoking packet quoted as far as
    /// the minimum MTU allows, RFC 4443 2.4 c), if the rules and the rate limit allow.
    func sendICMPv6Error(type: UInt8, code: UInt8, info: UInt32, about datagram: IPv6Datagram,
                         evenToMulticast: Bool = false, now: StackInstant) {
        guard shouldSendICMPv6Error(about: datagram, evenToMulticast: evenToMulticast) else {
            return count(.icmpv6TxErrorsSuppressed)
        }
        let quote = UnsafeRawBufferPointer(rebasing: datagram.packet.prefix(Self.ipv6MinimumMTU - IPv6Header.length - 8))
        // From the address the packet went to when it is ours (RFC 4443 2.2).
        let source = isOurIPv6Address(datagram.destination) ? datagram.destination : nil
        sendICMPv6Error(type: type, code: code, info: info, quoting: quote, from: source, to: datagram.source, now: now)
    }

    /// Sends an ICMPv6 error quoting `quote` to `destination`, within the
    /// rate limit (RFC 4443 2.4 f: one token bucket with ICMPv4's).
    func sendICMPv6Error(type: UInt8, code: UInt8, info: UInt32, quoting quote: UnsafeRawBufferPointer,
                         from source: IPv6Address?, to destination: IPv6Address, now: StackInstant) {
        guard takeICMPErrorToken(now: now) else { return count(.icmpv6TxErrorsRateLimited) }
        let sender = source ?? sourceAddress(for: destination)
        guard let sender else { return drop(.ipv6TxDropNoRoute) }
        do {
            try sendIPv6(nextHeader: ICMPv6Type.nextHeader, from: sender, to: destination, payloadLength: 8 + quote.count, now: now) { buffer, _ in
                buffer[0] = type
                buffer[1] = code
                buffer.setU16(0, at: 2)
                buffer.setU32(info, at: 4)
                UnsafeMutableRawBufferPointer(rebasing: buffer[8...]).copyMemory(from: quote)
                buffer.setU16(ICMPv6Type.checksum(UnsafeRawBufferPointer(buffer), source: sender, destination: destination), at: 2)
            }
            switch type {
            case ICMPv6Type.destinationUnreachable: count(.icmpv6TxDestinationUnreachable)
            case ICMPv6Type.parameterProblem: count(.icmpv6TxParameterProblems)
            default: count(.icmpv6TxTimeExceeded)
            }
        } catch .wouldBlock {
            drop(.ethernetTxDropLinkFull)
        } catch {
            drop(.ipv6TxDropNoRoute)
        }
    }
}
