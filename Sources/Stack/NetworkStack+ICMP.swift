import Wire

// ICMPv4 (RFC 792, RFC 1122 3.2.2).
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
                         typeOfService: packet.typeOfService, now: now) { buffer in
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
}
