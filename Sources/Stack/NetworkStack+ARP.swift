import Wire

// ARP (RFC 826) and neighbour resolution (RFC 1122 2.3.2).
extension NetworkStack {
    func receiveARP(_ bytes: UnsafeRawBufferPointer, now: StackInstant) {
        count(.arpRxPackets)
        let packet: ARPPacket
        do {
            packet = try ARPPacket(ARPPacketView(bytes))
        } catch .truncated {
            return drop(.arpDropTruncated)
        } catch {
            return drop(.arpDropUnsupported)
        }
        count(packet.operation == .request ? .arpRxRequests : .arpRxReplies)
        guard isAcceptableARPSender(packet) else { return drop(.arpDropBadSender) }

        let isForUs = packet.targetIP == address
        // RFC 826 merge rule: refresh an existing entry from any ARP packet,
        // but create one only when the packet is addressed to us. Traffic not
        // for us never adds entries (no cache poisoning by broadcast).
        if !packet.senderIP.isUnspecified, isForUs || arpCache[packet.senderIP] != nil {
            learnNeighbour(packet.senderIP, mac: packet.senderMAC, now: now)
        }
        guard isForUs else { return }
        if packet.operation == .request {
            sendARP(operation: .reply, targetMAC: packet.senderMAC, targetIP: packet.senderIP, to: packet.senderMAC)
        }
    }

    /// A sender we may learn from or answer: a unicast MAC and an address that
    /// is not ours, not broadcast, multicast or loopback. 0.0.0.0 is allowed
    /// (an RFC 5227 probe) but never learned.
    func isAcceptableARPSender(_ packet: ARPPacket) -> Bool {
        let ip = packet.senderIP
        return !packet.senderMAC.isMulticast && packet.senderMAC != .zero && packet.senderMAC != mac
            && ip != address && !ip.isLimitedBroadcast && !ip.isMulticast && !ip.isLoopback
            && ip != configuration.interface.subnetBroadcast
    }

    /// Records a confirmed neighbour and sends the packets that waited for it.
    func learnNeighbour(_ ip: IPv4Address, mac neighbourMAC: MACAddress, now: StackInstant) {
        let (pending, evicted) = arpCache.confirm(ip, mac: neighbourMAC, now: now)
        if let evicted { forget(evicted) }
        schedule(now + configuration.arpReachableTime)
        for parked in pending {
            let packet = parked.bytes
            let sent = transmitFrame { frame in
                EthernetHeader(destination: neighbourMAC, source: mac, etherType: .ipv4).emit(into: frame)
                packet.withUnsafeBytes {
                    UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length...]).copyMemory(from: $0)
                }
                return EthernetHeader.length + packet.count
            }
            if sent { count(.ipv4TxPackets) } else { drop(.ethernetTxDropLinkFull) }
        }
    }

    /// Accounts for an entry pushed out of a full table.
    func forget(_ entry: ARPCache.Entry) {
        count(.arpCacheEvictions)
        for parked in entry.pending {
            drop(.arpDropResolutionFailed)
            parked.owner?.report(.hostUnreachable)
        }
    }

    /// The MAC to send to `nextHop`, or nil when it must be resolved first.
    /// Using a stale entry triggers a unicast re-confirmation (RFC 1122 2.3.2.1).
    func resolvedMAC(for nextHop: IPv4Address, now: StackInstant) -> MACAddress? {
        guard let entry = arpCache[nextHop], let neighbourMAC = entry.mac else { return nil }
        if entry.state == .stale, entry.nextRequestAt <= now {
            arpCache.update(nextHop) { $0.nextRequestAt = now + configuration.arpRetryInterval }
            sendARP(operation: .request, targetMAC: neighbourMAC, targetIP: nextHop, to: neighbourMAC)
        }
        return neighbourMAC
    }

    /// Parks an IPv4 packet until `nextHop` resolves, asking for it if new.
    func parkForResolution(_ packet: [UInt8], owner: UDPEndpoint?, nextHop: IPv4Address, now: StackInstant) {
        if arpCache[nextHop] == nil {
            if let evicted = arpCache.beginResolution(nextHop, now: now) { forget(evicted) }
            sendARP(operation: .request, targetMAC: .zero, targetIP: nextHop, to: .broadcast)
            arpCache.update(nextHop) {
                $0.requestsSent = 1
                $0.nextRequestAt = now + configuration.arpRetryInterval
            }
            schedule(now + configuration.arpRetryInterval)
        }
        guard let entry = arpCache[nextHop], entry.pending.count < configuration.arpPendingPacketsPerNeighbour else {
            return drop(.arpDropPendingQueueFull)
        }
        arpCache.update(nextHop) { $0.pending.append(ParkedPacket(bytes: packet, owner: owner)) }
    }

    /// Retries unanswered requests, fails exhausted ones, ages reachable entries.
    func runARPTimers(now: StackInstant) {
        for (ip, entry) in arpCache.entries {
            switch entry.state {
            case .incomplete:
                if entry.nextRequestAt > now {
                    schedule(entry.nextRequestAt)
                } else if entry.requestsSent < configuration.arpMaxRequests {
                    sendARP(operation: .request, targetMAC: .zero, targetIP: ip, to: .broadcast)
                    let next = now + configuration.arpRetryInterval
                    arpCache.update(ip) {
                        $0.requestsSent += 1
                        $0.nextRequestAt = next
                    }
                    schedule(next)
                } else {
                    _ = arpCache.remove(ip)
                    count(.arpResolutionFailures)
                    // RFC 1122 2.3.2.2: the parked packets are dropped and
                    // their senders learn the host is unreachable.
                    for parked in entry.pending {
                        drop(.arpDropResolutionFailed)
                        parked.owner?.report(.hostUnreachable)
                    }
                }
            case .reachable:
                let expiry = entry.updatedAt + configuration.arpReachableTime
                if expiry <= now {
                    arpCache.update(ip) { $0.state = .stale }
                } else {
                    schedule(expiry)
                }
            case .stale:
                break
            }
        }
    }

    func sendARP(operation: ARPOperation, targetMAC: MACAddress, targetIP: IPv4Address, to destination: MACAddress) {
        let sent = transmitFrame { frame in
            EthernetHeader(destination: destination, source: mac, etherType: .arp).emit(into: frame)
            ARPPacket(operation: operation, senderMAC: mac, senderIP: address, targetMAC: targetMAC, targetIP: targetIP)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length...]))
            return EthernetHeader.length + ARPPacket.length
        }
        if sent {
            count(operation == .request ? .arpTxRequests : .arpTxReplies)
        } else {
            drop(.ethernetTxDropLinkFull)
        }
    }
}
