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

    /// A sender we may learn from or answer: a unicast MAC and a host
    /// address on our subnet other than ours (we could not reach anyone else
    /// directly anyway, so they would only fill the cache). 0.0.0.0 is allowed
    /// (an RFC 5227 probe) but never learned.
    func isAcceptableARPSender(_ packet: ARPPacket) -> Bool {
        let ip = packet.senderIP
        guard !packet.senderMAC.isMulticast, packet.senderMAC != .zero, packet.senderMAC != mac else { return false }
        if ip.isUnspecified { return true }
        return ip != address && configuration.interface.contains(ip) && !isBroadcast(ip)
            && ip != configuration.interface.network
    }

    /// Records a confirmed neighbour and sends the packets that waited for it.
    func learnNeighbour(_ ip: IPv4Address, mac neighbourMAC: MACAddress, now: StackInstant) {
        let (pending, evicted) = arpCache.confirm(ip, mac: neighbourMAC, now: now)
        if let evicted { forget(evicted) }
        schedule(now + configuration.arpReachableTime)
        for parked in pending {
            transmitIPv4(parked.header, payload: parked.payload, to: neighbourMAC)
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
    /// Using a stale entry sends a unicast re-confirmation at most once per
    /// retry interval; after `arpMaxRequests` unanswered ones the entry is
    /// dropped and the next packet resolves afresh (RFC 1122 2.3.2.1).
    func resolvedMAC(for nextHop: IPv4Address, now: StackInstant) -> MACAddress? {
        // A link without addresses (TUN): the link drops the header anyway.
        guard configuration.resolvesLinkAddresses else { return .zero }
        // The neighbour of the last send, while the cache has not changed: a
        // reachable entry stays so until a timer or an ARP packet changes it.
        if let last = lastResolution, last.address == nextHop, last.version == arpCache.version { return last.mac }
        guard let entry = arpCache[nextHop], let neighbourMAC = entry.mac else { return nil }
        if entry.state == .reachable { lastResolution = (nextHop, neighbourMAC, arpCache.version) }
        if entry.state == .stale, entry.nextRequestAt <= now {
            guard entry.requestsSent < configuration.arpMaxRequests else {
                _ = arpCache.remove(nextHop)
                return nil
            }
            arpCache.update(nextHop) {
                $0.requestsSent += 1
                $0.nextRequestAt = now + configuration.arpRetryInterval
            }
            sendARP(operation: .request, targetMAC: neighbourMAC, targetIP: nextHop, to: neighbourMAC)
        }
        return neighbourMAC
    }

    /// Parks an IPv4 packet until `nextHop` resolves, asking for it if new
    /// (or if an earlier resolution failed).
    func parkForResolution(_ packet: ParkedPacket, nextHop: IPv4Address, now: StackInstant) {
        if arpCache[nextHop]?.state != .incomplete {
            if arpCache[nextHop] == nil, let evicted = arpCache.beginResolution(nextHop, now: now) { forget(evicted) }
            arpCache.update(nextHop) {
                $0.state = .incomplete
                $0.mac = nil
                $0.updatedAt = now
                $0.requestsSent = 1
                $0.nextRequestAt = now + configuration.arpRetryInterval
            }
            sendARP(operation: .request, targetMAC: .zero, targetIP: nextHop, to: .broadcast)
            schedule(now + configuration.arpRetryInterval)
        }
        guard let entry = arpCache[nextHop], entry.pending.count < configuration.arpPendingPacketsPerNeighbour,
              arpCache.pendingBytes + packet.payload.count <= configuration.arpPendingMaximumBytes else {
            return drop(.arpDropPendingQueueFull)
        }
        arpCache.park(packet, for: nextHop)
    }

    /// Retries unanswered requests, fails exhausted ones, ages the others.
    func runARPTimers(now: StackInstant) {
        // In address order, so that what the timers send does not depend on
        // hashing (a replay must produce the same frames every time).
        for (ip, entry) in arpCache.entries.sorted(by: { $0.key < $1.key }) {
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
                    count(.arpResolutionFailures)
                    // RFC 1122 2.3.2.2: the parked packets are dropped and
                    // their senders learn the host is unreachable.
                    for parked in arpCache.takePending(ip) {
                        drop(.arpDropResolutionFailed)
                        parked.owner?.report(.hostUnreachable)
                    }
                    arpCache.update(ip) {
                        $0.state = .failed
                        $0.updatedAt = now
                    }
                    schedule(now + configuration.arpFailedHoldTime)
                }
            case .reachable:
                let expiry = entry.updatedAt + configuration.arpReachableTime
                if expiry <= now {
                    arpCache.update(ip) {
                        $0.state = .stale
                        $0.requestsSent = 0
                    }
                } else {
                    schedule(expiry)
                }
            case .failed:
                let expiry = entry.updatedAt + configuration.arpFailedHoldTime
                if expiry <= now { _ = arpCache.remove(ip) } else { schedule(expiry) }
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
