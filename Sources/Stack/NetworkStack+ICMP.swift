import SocketAPI
import Wire

// ICMPv4 (RFC 792, RFC 1122 3.2.2): echo, errors sent and errors received.
extension NetworkStack {
    func receiveICMP(_ packet: IPv4PacketView, now: StackInstant) {
        count(.icmpRxMessages)
        let message: ICMPv4MessageView
        do { message = try ICMPv4MessageView(packet.payload) } catch { return drop(.icmpDropTruncated) }
        guard message.checksumIsValid else { return drop(.icmpDropBadChecksum) }
        switch message.type {
        case ICMPv4Type.echoRequest:
            count(.icmpRxEchoRequests)
            // RFC 1122 3.2.2.6: an echo to a broadcast address may be ignored; we do, as Linux does.
            guard packet.destination == address else { return drop(.icmpDropBroadcastEcho) }
            answerEcho(message, from: packet, now: now)
        case ICMPv4Type.echoReply:
            count(.icmpRxEchoReplies)
        case let type where ICMPv4Type.isError(type):
            count(.icmpRxErrors)
            receiveICMPError(message, from: packet)
        default:
            drop(.icmpDropUnhandledType)
        }
    }

    /// RFC 792: the reply carries the request's identifier, sequence number
    /// and data unchanged, from the address the request was sent to.
    func answerEcho(_ request: ICMPv4MessageView, from packet: IPv4PacketView, now: StackInstant) {
        let length = request.bytes.count
        do {
            try sendIPv4(proto: .icmp, to: packet.source, payloadLength: length,
                         typeOfService: packet.typeOfService, now: now) { buffer, _ in
                buffer.copyMemory(from: request.bytes)
                ICMPv4Header(type: ICMPv4Type.echoReply, code: 0, restOfHeader: request.restOfHeader)
                    .emit(intoMessage: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]))
            }
            count(.icmpTxEchoReplies)
        } catch .wouldBlock {
            drop(.ethernetTxDropLinkFull)
        } catch {
            drop(.ipv4TxDropNoRoute)
        }
    }

    /// RFC 1122 4.1.3.3 and 3.2.2.1: an error about a datagram we sent goes
    /// to the connected UDP socket it came from (Linux does the same;
    /// unconnected sockets cannot tell which send failed), and to any socket
    /// on that port that asked for its errors (IP_RECVERR), queued with the details.
    func receiveICMPError(_ message: ICMPv4MessageView, from packet: IPv4PacketView) {
        let quoted: ICMPv4QuotedDatagramView
        do { quoted = try ICMPv4QuotedDatagramView(message.payload) } catch { return drop(.icmpDropBadQuote) }
        guard quoted.source == address, quoted.proto == .udp, let error = socketError(forICMPType: message.type, code: message.code) else {
            return count(.icmpRxErrorsUnmatched)
        }
        let connected = connectedEndpoint(localPort: quoted.sourcePort, remote: quoted.destination, remotePort: quoted.destinationPort)
        let listening = (udpEndpoints[quoted.sourcePort] ?? []).filter { $0.receivesErrors && $0.remote == nil }
        guard connected != nil || !listening.isEmpty else { return count(.icmpRxErrorsUnmatched) }
        count(.icmpRxErrorsDelivered)
        var targets = listening
        if let connected {
            if connected.receivesErrors { targets.append(connected) } else { connected.report(error) }
        }
        guard !targets.isEmpty else { return }
        let after = quoted.headerLength + UDPHeader.length
        let payload = quoted.bytes.count > after
            ? Array(quoted.bytes[after..<min(quoted.bytes.count, after + ICMPErrorReport.quotedPayloadLimit)]) : []
        let info = message.type == ICMPv4Type.destinationUnreachable && message.code == ICMPv4UnreachableCode.fragmentationNeeded
            ? message.restOfHeader & 0xFFFF : 0
        let details = ICMPErrorReport(error: error, type: message.type, code: message.code, info: info, offender: packet.source,
                                      destination: quoted.destination, destinationPort: quoted.destinationPort, payload: payload)
        for endpoint in targets where !endpoint.queue(details) { drop(.udpDropErrorQueueFull) }
    }

    /// The POSIX error an ICMP error means to a socket, as Linux maps them.
    func socketError(forICMPType type: UInt8, code: UInt8) -> SocketError? {
        switch (type, code) {
        case (ICMPv4Type.destinationUnreachable, ICMPv4UnreachableCode.port): .connectionRefused
        case (ICMPv4Type.destinationUnreachable, ICMPv4UnreachableCode.network): .networkUnreachable
        case (ICMPv4Type.destinationUnreachable, ICMPv4UnreachableCode.fragmentationNeeded): .messageTooLong
        case (ICMPv4Type.destinationUnreachable, _): .hostUnreachable
        case (ICMPv4Type.timeExceeded, _): .hostUnreachable
        default: nil
        }
    }

    /// RFC 1122 3.2.2: never send an ICMP error about an ICMP error, a
    /// datagram to a broadcast or multicast address or sent as a link-layer
    /// broadcast, a non-initial fragment, or one whose source does not name a
    /// single host.
    func shouldSendICMPError(about packet: IPv4PacketView, linkBroadcast: Bool) -> Bool {
        if linkBroadcast || isBroadcast(packet.destination) || packet.destination.isMulticast { return false }
        if packet.fragmentOffset != 0 { return false }
        let source = packet.source
        if source.isUnspecified || source.isLimitedBroadcast || source.isMulticast || source.isLoopback
            || source.isReserved || source == subnetBroadcast { return false }
        if packet.proto == .icmp {
            // An error about an error could loop; an unreadable ICMP message is treated as one.
            guard let type = packet.payload.first, !ICMPv4Type.isError(type) else { return false }
        }
        return true
    }

    /// Sends an ICMP error about `packet` (its header and first 8 payload
    /// bytes quoted, RFC 792), if the rules and the rate limit allow.
    func sendICMPError(type: UInt8, code: UInt8, restOfHeader: UInt32 = 0, about packet: IPv4PacketView,
                       linkBroadcast: Bool, now: StackInstant) {
        guard shouldSendICMPError(about: packet, linkBroadcast: linkBroadcast) else { return count(.icmpTxErrorsSuppressed) }
        let quote = UnsafeRawBufferPointer(rebasing: packet.packet[0..<min(packet.totalLength, packet.headerLength + 8)])
        sendICMPError(type: type, code: code, restOfHeader: restOfHeader, quoting: quote, to: packet.source, now: now)
    }

    /// Sends an ICMP error quoting `quote` to `destination`, within the rate limit.
    func sendICMPError(type: UInt8, code: UInt8, restOfHeader: UInt32 = 0, quoting quote: UnsafeRawBufferPointer,
                       to destination: IPv4Address, now: StackInstant) {
        guard takeICMPErrorToken(now: now) else { return count(.icmpTxErrorsRateLimited) }
        let length = ICMPv4Header.length + quote.count
        do {
            try sendIPv4(proto: .icmp, to: destination, payloadLength: length, now: now) { buffer, _ in
                UnsafeMutableRawBufferPointer(rebasing: buffer[ICMPv4Header.length..<length]).copyMemory(from: quote)
                ICMPv4Header(type: type, code: code, restOfHeader: restOfHeader)
                    .emit(intoMessage: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]))
            }
            count(type == ICMPv4Type.timeExceeded ? .icmpTxTimeExceeded : .icmpTxDestinationUnreachable)
        } catch .wouldBlock {
            drop(.ethernetTxDropLinkFull)
        } catch {
            drop(.ipv4TxDropNoRoute)
        }
    }

    /// Token bucket: `icmpErrorBurst` at once, refilled at `icmpErrorsPerSecond`.
    func takeICMPErrorToken(now: StackInstant) -> Bool {
        let burst = Double(configuration.icmpErrorBurst)
        if let last = icmpErrorRefilledAt {
            let elapsed = Double(now.since(last).nanoseconds) / 1e9
            icmpErrorTokens = min(burst, icmpErrorTokens + elapsed * Double(configuration.icmpErrorsPerSecond))
        }
        icmpErrorRefilledAt = now
        guard icmpErrorTokens >= 1 else { return false }
        icmpErrorTokens -= 1
        return true
    }
}
