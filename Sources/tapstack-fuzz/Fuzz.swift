// libFuzzer entry points: every wire parser and the whole stack core.
// Built only by `make fuzz` (TAPSTACK_FUZZ=1, -sanitize=fuzzer,address);
// FUZZ_TARGET picks the target: ethernet, arp, ipv4, icmp, udp, igmp, ipv6, describe,
// offload (a virtio-net header and the frame after it, as the TAP device
// hands them over: checksum completion, GSO cutting, run checks), stack.
import CTapstackChannel
import Glibc
import SocketAPI
import Stack
import Wire

/// Which target this process fuzzes (read once from FUZZ_TARGET).
nonisolated(unsafe) var target = "stack"

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    if let name = getenv("FUZZ_TARGET") { target = String(cString: name) }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    switch target {
    case "ethernet": fuzzEthernet(bytes)
    case "arp": fuzzARP(bytes)
    case "ipv4": fuzzIPv4(bytes)
    case "icmp": fuzzICMP(bytes)
    case "udp": fuzzUDP(bytes)
    case "igmp": fuzzIGMP(bytes)
    case "ipv6": fuzzIPv6(bytes)
    case "describe": _ = FrameDescription.describe(bytes)
    case "offload": fuzzOffload(bytes)
    case "ring": fuzzRing(bytes)
    case "region": fuzzRegion(bytes)
    default: fuzzStack(bytes)
    }
    return 0
}

func fuzzEthernet(_ bytes: UnsafeRawBufferPointer) {
    guard let frame = try? EthernetFrameView(bytes) else { return }
    var buffer = [UInt8](repeating: 0, count: EthernetHeader.length)
    buffer.withUnsafeMutableBytes { EthernetHeader(frame).emit(into: $0) }
    precondition(buffer.elementsEqual(bytes.prefix(EthernetHeader.length)), "ethernet round trip")
}

func fuzzARP(_ bytes: UnsafeRawBufferPointer) {
    guard let view = try? ARPPacketView(bytes), let packet = try? ARPPacket(view) else { return }
    var buffer = [UInt8](repeating: 0, count: ARPPacket.length)
    buffer.withUnsafeMutableBytes { packet.emit(into: $0) }
    let again = buffer.withUnsafeBytes { try? ARPPacket(ARPPacketView($0)) }
    precondition(again == packet, "arp round trip")
}

func fuzzIPv4(_ bytes: UnsafeRawBufferPointer) {
    guard let view = try? IPv4PacketView(bytes) else { return }
    precondition(view.payload.count == view.totalLength - view.headerLength)
    _ = (view.fragmentOffset, view.isFragment, view.source, view.destination, view.proto)
    guard let header = try? IPv4Header(view) else { return }
    var buffer = [UInt8](repeating: 0, count: IPv4Header.length + header.payloadLength)
    buffer.withUnsafeMutableBytes { header.emit(into: $0) }
    let again = buffer.withUnsafeBytes { try? IPv4Header(IPv4PacketView($0)) }
    precondition(again == header, "ipv4 round trip")
}

func fuzzICMP(_ bytes: UnsafeRawBufferPointer) {
    if let quoted = try? ICMPv4QuotedDatagramView(bytes) { _ = (quoted.sourcePort, quoted.destinationPort, quoted.source) }
    guard let view = try? ICMPv4MessageView(bytes) else { return }
    _ = (view.identifier, view.sequenceNumber, view.payload.count)
    _ = try? ICMPv4Header(view)
}

func fuzzUDP(_ bytes: UnsafeRawBufferPointer) {
    guard let view = try? UDPDatagramView(bytes) else { return }
    precondition(view.payload.count == view.length - UDPHeader.length)
    _ = try? UDPHeader(view, source: IPv4Address(192, 0, 2, 1), destination: IPv4Address(192, 0, 2, 2))
}

/// An IGMP message: the view's fields, then the message (checksum fixed so
/// it is not just dropped) fed to a stack holding groups, as a query to
/// 224.0.0.1 and to its group, with time advancing so answers go out;
/// what it sends is a parseable report and its state stays bounded.
func fuzzIGMP(_ bytes: UnsafeRawBufferPointer) {
    if let view = try? IGMPMessageView(bytes) {
        _ = (view.type, view.group, view.queryVersion, view.maxResponseDeciseconds, view.querySources.count, view.checksumIsValid)
    }
    guard bytes.count >= IGMPMessageView.minimumLength, bytes.count <= 1400 else { return }
    var message = Array(bytes)
    message[2] = 0; message[3] = 0
    let sum = message.withUnsafeBytes { InternetChecksum.compute($0) }
    message[2] = UInt8(sum >> 8); message[3] = UInt8(sum & 0xFF)
    var configuration = StackConfiguration.standard
    configuration.multicastMaximumGroups = 8
    // Everything the stack sends is IPv4, and IGMP only as a well-formed report or leave.
    let sink = CheckingSink { frame in
        guard let ethernet = try? EthernetFrameView(frame), ethernet.etherType == .ipv4,
              let ip = try? IPv4PacketView(ethernet.payload), ip.checksumIsValid else { preconditionFailure("not an IPv4 frame") }
        guard ip.proto == .igmp else { return }
        guard let message = try? IGMPMessageView(ip.payload), message.checksumIsValid,
              [IGMPType.version1Report, IGMPType.version2Report, IGMPType.leaveGroup, IGMPType.version3Report].contains(message.type)
        else { preconditionFailure("the stack sent a malformed IGMP message") }
    }
    let stack = try! NetworkStack(configuration: configuration, sink: sink)
    var now = StackInstant.seconds(1)
    let member = stack.openUDP()
    try? stack.bind(member, port: 5000)
    for group in [IPv4Address(239, 1, 2, 3), IPv4Address(224, 0, 0, 1), IPv4Address(239, 0, 0, 9)] {
        try? stack.join(group, for: member, sources: group.rawValue & 1 == 1 ? [IPv4Address(192, 0, 2, 1)] : nil, now: now)
    }
    let group = message.withUnsafeBytes { IPv4Address(reading: $0, at: 4) }
    for destination in [IPv4Address.allHosts, group] {
        var packet = [UInt8](repeating: 0, count: 14 + IPv4Header.length) + message
        packet.withUnsafeMutableBytes { frame in
            EthernetHeader(destination: destination.multicastMAC, source: MACAddress(2, 0, 0, 0, 0, 0xFE), etherType: .ipv4).emit(into: frame)
            IPv4Header(payloadLength: message.count, identification: 1, ttl: 1, proto: .igmp, source: IPv4Address(192, 0, 2, 254),
                       destination: destination).emit(into: UnsafeMutableRawBufferPointer(rebasing: frame[14...]))
            stack.receive(frame: UnsafeRawBufferPointer(frame), now: now)
        }
        for _ in 0..<30 {
            now = now + .seconds(1)
            stack.advance(to: now)
        }
    }
    try? stack.leave(IPv4Address(239, 1, 2, 3), for: member, now: now)
    stack.close(member)
    stack.advance(to: now + .seconds(600))
    precondition(stack.joinedGroups.isEmpty, "groups left after the last socket closed")
}

/// An IPv6 packet: the view's fields, then the packet fed to a stack with
/// a global address, SLAAC and MLD on and a dual-stack UDP socket on port 7
/// that joined ff12::7 (to its
/// MAC and to its solicited-node group's), with the upper-layer checksum
/// (ICMPv6 or UDP, past any extension headers) fixed so the message is not
/// just dropped; then again as if it were every other fragment, and the
/// clock run past the reassembly and neighbour timers. What the stack sends
/// must be IPv6 with a valid ICMPv6 or UDP checksum, or a fragment; its
/// caches stay within their bounds.
func fuzzIPv6(_ bytes: UnsafeRawBufferPointer) {
    if let view = try? IPv6PacketView(bytes) {
        _ = (view.trafficClass, view.nextHeader, view.hopLimit, view.source.description, view.destination.isMulticast, view.payload.count)
    }
    guard bytes.count <= 1500 else { return }
    var packet = Array(bytes)
    if let view = try? packet.withUnsafeBytes({ try IPv6PacketView($0) }),
       let (next, offset) = IPv6NextHeader.upperLayer(of: view.packet), next == IPv6NextHeader.icmpv6 || next == IPv6NextHeader.udp {
        let field = offset + (next == IPv6NextHeader.udp ? 6 : 2)
        let source = view.source, destination = view.destination, end = view.packet.count
        if field + 2 <= end {
            packet[field] = 0; packet[field + 1] = 0
            let sum = packet.withUnsafeBytes { bytes in
                var sum = IPv6Header.pseudoHeaderSum(source: source, destination: destination, length: end - offset, nextHeader: next)
                sum.add(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
                return sum.value
            }
            packet[field] = UInt8(sum >> 8); packet[field + 1] = UInt8(sum & 0xFF)
        }
    }
    let sink = CheckingSink { frame in
        guard let ethernet = try? EthernetFrameView(frame) else { preconditionFailure("the stack sent a runt frame") }
        guard ethernet.etherType == .ipv6 else { return }  // its ARP announcement at start
        guard let ip = try? IPv6PacketView(ethernet.payload) else { preconditionFailure("the stack sent a malformed IPv6 frame") }
        if ip.nextHeader == IPv6NextHeader.fragment { return }
        // Past its extension headers (MLD reports carry a hop-by-hop Router Alert).
        guard let (next, offset) = IPv6NextHeader.upperLayer(of: ip.packet), offset <= ip.packet.count else {
            preconditionFailure("the stack sent a cut-short header chain")
        }
        let upper = UnsafeRawBufferPointer(rebasing: ip.packet[offset...])
        switch next {
        case IPv6NextHeader.udp:
            guard let udp = try? UDPDatagramView(upper), udp.checksumIsValid(source: ip.source, destination: ip.destination) else {
                preconditionFailure("the stack sent a bad UDP datagram over IPv6")
            }
        default:
            guard next == ICMPv6Type.nextHeader, ICMPv6Type.checksum(upper, source: ip.source, destination: ip.destination) == 0 else {
                preconditionFailure("the stack sent a malformed ICMPv6 message")
            }
        }
    }
    var configuration = StackConfiguration.standard
    configuration.ipv6Addresses = [IPv6Address("2001:db8::2")!]
    configuration.ipv6Autoconfiguration = true
    configuration.reportsMulticastListening = true
    let stack = try! NetworkStack(configuration: configuration, sink: sink)
    stack.start(now: .seconds(1))
    let socket = stack.openUDP(family: .ipv6)
    try! stack.bind(socket, to: SocketAddress(IPv6Address.unspecified, 7))
    try! stack.join(IPv6Address("ff12::7")!, for: socket, now: .seconds(1))
    func feed(_ packet: [UInt8], to mac: MACAddress, at now: StackInstant) {
        var frame = [UInt8](repeating: 0, count: EthernetHeader.length) + packet
        frame.withUnsafeMutableBytes { frame in
            EthernetHeader(destination: mac, source: MACAddress(2, 0, 0, 0, 0, 0xFE), etherType: .ipv6).emit(into: frame)
            stack.receive(frame: UnsafeRawBufferPointer(frame), now: now)
        }
    }
    for mac in [stack.mac, stack.linkLocalAddress.solicitedNode.multicastMAC] { feed(packet, to: mac, at: .seconds(1)) }
    // Anything queued is answered back (a datagram to an address the stack may not know how to reach).
    while let datagram = try? stack.receive(from: socket) {
        try? datagram.payload.withUnsafeBytes { try stack.send($0, from: socket, to: datagram.sourceAddress, now: .seconds(1)) }
    }
    // The same packet as the later fragments of a datagram its own fragment header may have started.
    if packet.count > 48, packet[6] == IPv6NextHeader.fragment {
        for offset in stride(from: 8, to: 64, by: 8) {
            packet[42] = UInt8(offset >> 8); packet[43] = UInt8(offset & 0xF8) | (offset < 56 ? 1 : 0)
            feed(packet, to: stack.mac, at: .seconds(2))
        }
    }
    stack.advance(to: .seconds(90))
    precondition(stack.reassembly6.count <= configuration.reassemblyMaximumDatagrams, "IPv6 reassembly over its bound")
    precondition(stack.neighborCache.count <= configuration.neighborCacheCapacity, "neighbour cache over its bound")
    precondition(stack.ipv6AddressStates.count <= configuration.ipv6MaximumAddresses, "addresses over their bound")
}

/// A shared ring whose producer is hostile (issue 18): the input is the
/// producer's tail index and the ring's bytes. The consumer must take only
/// records within the ring, of lengths it can hold, and stop for good at an
/// inconsistency; then a record of its own still round-trips in a fresh ring.
func fuzzRing(_ bytes: UnsafeRawBufferPointer) {
    let capacity: UInt32 = 256
    let size = tsr_ring_size(capacity)
    let memory = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    defer { memory.deallocate() }
    memory.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    var consumer = tsr_end()
    precondition(tsr_attach(&consumer, memory, capacity, 0) == 0)
    let shared = memory.assumingMemoryBound(to: tsr_shared.self)
    if bytes.count >= 4 { shared.pointee.tail = bytes.loadUnaligned(as: UInt32.self) }
    let data = memory + MemoryLayout<tsr_shared>.size
    if bytes.count > 4 { data.copyMemory(from: bytes.baseAddress! + 4, byteCount: min(Int(capacity), bytes.count - 4)) }
    var out = [UInt8](repeating: 0, count: 64)
    for _ in 0..<Int(capacity) {
        let n = out.withUnsafeMutableBytes { tsr_pop(&consumer, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        precondition(n <= Int(capacity) / 2, "a record longer than the ring can hold")
    }
}

/// The service's reader of a client's region (issue 18) with the client
/// hostile: the input is the client-to-service ring's tail and bytes, and
/// the client's head of the other ring. The service takes records into its
/// batch (each within a slot, at most half the ring), stops for good at an
/// inconsistency, and its own sends toward the client stop there too.
func fuzzRegion(_ bytes: UnsafeRawBufferPointer) {
    var fd: Int32 = -1
    guard let region = tsv_region_create(&fd) else { return }
    defer { tsv_region_destroy(region); close(fd) }
    let capacity = TSR_REGION_CAPACITY
    let memory = tsv_region_memory(region)!
    let toService = tsr_region_to_service(memory, capacity)!
    let toClient = tsr_region_to_client(memory, capacity)!
    if bytes.count >= 8 {
        toService.assumingMemoryBound(to: tsr_shared.self).pointee.tail = bytes.loadUnaligned(as: UInt32.self)
        toClient.assumingMemoryBound(to: tsr_shared.self).pointee.head = bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
    }
    if bytes.count > 8 {
        // The input tiled over the ring's data, so records can sit anywhere in it.
        let data = toService + MemoryLayout<tsr_shared>.size
        var at = 0
        while at < Int(capacity) {
            let take = min(bytes.count - 8, Int(capacity) - at)
            (data + at).copyMemory(from: bytes.baseAddress! + 8, byteCount: take)
            at += take
        }
    }
    let batch = tsv_batch_create(16, 65536)!
    defer { tsv_batch_destroy(batch) }
    for _ in 0..<64 {
        let count = tsv_region_take(region, batch, 16)
        if count <= 0 { break }
        for index in 0..<UInt32(count) {
            precondition(tsv_batch_length(batch, index) <= capacity / 2, "a record longer than the ring can hold")
            precondition(tsv_batch_truncated(batch, index) == 0, "a record longer than a slot")
        }
    }
    // Toward the client: whatever its head says, the service writes within the ring or refuses.
    tsv_batch_set_length(batch, 0, 100)
    var rang: Int32 = 0
    for _ in 0..<2000 where tsv_region_put(region, batch, 0, 1, &rang) == 1 {}
}

/// A sink that hands every frame the stack sends to `check` (which traps on a bad one).
final class CheckingSink: FrameSink {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1514, alignment: 16)
    let check: (UnsafeRawBufferPointer) -> Void
    init(_ check: @escaping (UnsafeRawBufferPointer) -> Void) { self.check = check }
    var completesChecksums: Bool { false }
    var maximumFrameLength: Int { buffer.count }
    func reserveFrame() -> UnsafeMutableRawBufferPointer? { buffer }
    func hasRoom(for frames: Int) -> Bool { true }
    func commitFrame(length: Int, checksum: ChecksumOffload) { check(UnsafeRawBufferPointer(rebasing: buffer[0..<length])) }
}

/// What the TAP link does with a frame the kernel hands over: its virtio
/// header read, a partial checksum completed, a GSO frame cut into its
/// datagrams (each within the frame limit and a valid UDP datagram of the
/// frame's IP version), and the run checks of the sending side applied to
/// its two halves.
func fuzzOffload(_ bytes: UnsafeRawBufferPointer) {
    guard let header = VirtioNetHeader(bytes) else { return }
    var frame = Array(bytes[VirtioNetHeader.length...])
    frame.withUnsafeMutableBytes { frame in
        if header.flags & VirtioNetHeader.needsChecksum != 0 {
            if completeChecksum(in: frame, start: Int(header.checksumStart), offset: Int(header.checksumOffset)) {
                precondition(Int(header.checksumStart) + Int(header.checksumOffset) + 2 <= frame.count)
            }
        }
        let whole = UnsafeRawBufferPointer(frame)
        let size = Int(header.gsoSize)
        if let count = UDPSegmentation.segmentCount(of: whole, segmentSize: size) {
            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 1514, alignment: 16)
            defer { out.deallocate() }
            for index in 0..<min(count, 2000) {
                guard let length = UDPSegmentation.writeSegment(index, of: whole, segmentSize: size, into: out) else { continue }
                precondition(length <= out.count)
                let segment = UnsafeRawBufferPointer(rebasing: out[0..<length])
                let packet = UnsafeRawBufferPointer(rebasing: segment[EthernetHeader.length...])
                if segment.u16(at: EthernetFrameView.Field.etherType) == EtherType.ipv6.rawValue {
                    // USO6: an IPv6 frame is cut into IPv6 datagrams.
                    guard let ip = try? IPv6PacketView(packet), ip.nextHeader == IPv6NextHeader.udp,
                          let udp = try? UDPDatagramView(ip.payload) else { preconditionFailure("a cut IPv6 segment does not parse") }
                    precondition(udp.checksumIsValid(source: ip.source, destination: ip.destination), "a cut IPv6 segment's checksum")
                    continue
                }
                guard let ip = try? IPv4PacketView(packet),
                      let udp = try? UDPDatagramView(ip.payload) else { preconditionFailure("a cut segment does not parse") }
                precondition(udp.checksumIsValid(source: ip.source, destination: ip.destination), "a cut segment's checksum")
            }
        }
        let half = whole.count / 2
        let first = UnsafeRawBufferPointer(rebasing: whole[0..<half]), second = UnsafeRawBufferPointer(rebasing: whole[half...])
        if let payload = UDPSegmentation.runPayloadLength(first) {
            precondition(payload > 0 && payload == first.count - UDPSegmentation.runHeaderLength)
            if UDPSegmentation.canFollow(first, with: second, at: 1) {
                var header = [UInt8](repeating: 0, count: 64)
                let written = header.withUnsafeMutableBytes {
                    UDPSegmentation.writeRunHeader(first: first, payloadBytes: payload + second.count - UDPSegmentation.runHeaderLength, into: $0)
                }
                precondition(written == VirtioNetHeader.length + UDPSegmentation.runHeaderLength)
            }
        }
    }
}

/// A sink that keeps nothing: the stack may send whatever it likes.
final class DiscardingSink: FrameSink {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1514, alignment: 16)
    /// Half the inputs run with checksum offload (UDP checksums left partial).
    var completesChecksums = false
    var maximumFrameLength: Int { buffer.count }
    func reserveFrame() -> UnsafeMutableRawBufferPointer? { buffer }
    func commitFrame(length: Int, checksum: ChecksumOffload) { precondition(length <= 1514) }
    func hasRoom(for frames: Int) -> Bool { true }
}

/// The whole core: the input is a sequence of records [2-byte length][1-byte
/// clock step in 100 ms, top bit: checksum completed by the link][frame], fed to one stack with the clock advancing,
/// with the echo socket served. No trap, and its state stays within bounds.
func fuzzStack(_ bytes: UnsafeRawBufferPointer) {
    var configuration = StackConfiguration.standard
    configuration.arpCacheCapacity = 16
    configuration.reassemblyMaximumDatagrams = 4
    configuration.reassemblyMaximumBytes = 16 << 10
    configuration.udpReceiveQueueDatagrams = 4
    let sink = DiscardingSink()
    sink.completesChecksums = bytes.first.map { $0 & 1 == 1 } ?? false
    let stack = try! NetworkStack(configuration: configuration, sink: sink)
    var now = StackInstant.seconds(1)
    stack.start(now: now)
    let echo = stack.openUDP()
    try? stack.bind(echo, port: 7)
    // A joined group, so multicast and IGMP input reach their handlers.
    try? stack.join(IPv4Address(239, 1, 2, 3), for: echo, now: now)
    var offset = 0
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    defer { scratch.deallocate() }
    while offset + 3 <= bytes.count {
        let length = min(Int(bytes[offset]) << 8 | Int(bytes[offset + 1]), bytes.count - offset - 3)
        let step = bytes[offset + 2]
        now = now + .milliseconds(Int(step & 0x7F) * 100)
        let frame = UnsafeRawBufferPointer(rebasing: bytes[(offset + 3)..<(offset + 3 + length)])
        offset += 3 + length
        stack.advance(to: now)
        // A step byte with its top bit set plays a frame whose UDP checksum the link completed.
        let checksum: ChecksumOffload = step & 0x80 != 0 ? .verified(start: 34, offset: 6) : .none
        stack.receive(frame: frame, checksum: checksum, now: now)
        while let info = try? stack.receive(from: echo, into: scratch) {
            try? stack.send(UnsafeRawBufferPointer(rebasing: scratch[0..<min(info.length, scratch.count)]), from: echo,
                            to: info.source, port: info.sourcePort, now: now)
        }
        precondition(stack.arpCache.count <= configuration.arpCacheCapacity, "ARP cache over its bound")
        precondition(stack.reassembly.count <= configuration.reassemblyMaximumDatagrams, "reassembly over its bound")
        precondition(stack.reassembly.bufferedBytes <= configuration.reassemblyMaximumBytes, "reassembly bytes over bound")
        precondition(stack.arpCache.pendingBytes <= configuration.arpPendingMaximumBytes, "parked bytes over bound")
    }
    stack.advance(to: now + .seconds(60))
}
