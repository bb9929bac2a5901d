/// UDP segmentation offload over IPv4 in both directions, as a TAP device
/// with `IFF_VNET_HDR` carries it (`VIRTIO_NET_HDR_GSO_UDP_L4`):
///
/// - a *run* of frames the stack built for one flow (consecutive, equal
///   payload sizes, the last may be shorter) is written to the kernel as one
///   frame: the first frame's headers, resized to the whole, then every
///   payload; the kernel cuts it back into the same datagrams, numbering the
///   IP identifications from the first's;
/// - a frame the kernel hands over that way is cut into its datagrams here.
///
/// Frames of a run carry no IP options and no fragment, and a partial UDP
/// checksum (`ChecksumOffload.partial(start: 34, offset: 6)`).
public enum UDPSegmentation {
    /// Datagrams per run at most (the kernel's UDP_MAX_SEGMENTS).
    public static let maximumSegments = 64
    /// Ethernet + IPv4 without options + UDP.
    public static let runHeaderLength = EthernetHeader.length + IPv4Header.length + UDPHeader.length
    /// Where a run frame's UDP checksum is, as its `ChecksumOffload`.
    public static let checksumStart: UInt16 = UInt16(EthernetHeader.length + IPv4Header.length)
    public static let checksumOffset: UInt16 = UInt16(UDPDatagramView.Field.checksum)

    // MARK: Runs (sending)

    /// The UDP payload length of `frame` when it can be part of a run: an
    /// IPv4 UDP datagram without options or fragmentation, exactly filling
    /// the frame (no Ethernet padding), with a non-empty payload. Else nil.
    @inlinable
    public static func runPayloadLength(_ frame: UnsafeRawBufferPointer) -> Int? {
        guard frame.count > runHeaderLength,
              frame.u16(at: EthernetFrameView.Field.etherType) == EtherType.ipv4.rawValue,
              frame[EthernetHeader.length] == 0x45 else { return nil }
        let ip = EthernetHeader.length
        guard frame[ip + IPv4PacketView.Field.proto] == IPProtocol.udp.rawValue,
              frame.u16(at: ip + IPv4PacketView.Field.flagsFragment) & 0x3FFF == 0,
              Int(frame.u16(at: ip + IPv4PacketView.Field.totalLength)) == frame.count - ip,
              Int(frame.u16(at: ip + IPv4Header.length + UDPDatagramView.Field.length)) == frame.count - ip - IPv4Header.length
        else { return nil }
        return frame.count - runHeaderLength
    }

    /// True when `next` can be datagram `index` (1 or more) of a run that
    /// `first` starts: the same Ethernet header, IPv4 header fields (but the
    /// length, the identification, which must be the first's plus `index`,
    /// and the checksum) and UDP ports, and a payload of the first's length
    /// or shorter (a shorter one must end the run).
    @inlinable
    public static func canFollow(_ first: UnsafeRawBufferPointer, with next: UnsafeRawBufferPointer, at index: Int) -> Bool {
        guard next.count <= first.count, runPayloadLength(next) != nil else { return false }
        let ip = EthernetHeader.length
        let id = first.u16(at: ip + IPv4PacketView.Field.identification) &+ UInt16(truncatingIfNeeded: index)
        return first.u32(at: 0) == next.u32(at: 0) && first.u32(at: 4) == next.u32(at: 4)
            && first.u32(at: 8) == next.u32(at: 8) && first.u16(at: 12) == next.u16(at: 12)
            && first.u16(at: ip) == next.u16(at: ip)
            && next.u16(at: ip + IPv4PacketView.Field.identification) == id
            && first.u32(at: ip + IPv4PacketView.Field.flagsFragment) == next.u32(at: ip + IPv4PacketView.Field.flagsFragment)
            && first.u32(at: ip + IPv4PacketView.Field.source) == next.u32(at: ip + IPv4PacketView.Field.source)
            && first.u32(at: ip + IPv4PacketView.Field.destination) == next.u32(at: ip + IPv4PacketView.Field.destination)
            && first.u32(at: ip + IPv4Header.length) == next.u32(at: ip + IPv4Header.length)
    }

    /// Writes the virtio header and the run's headers (the first frame's,
    /// sized for `payloadBytes` of payload in all) into `header`; returns the
    /// bytes written (`VirtioNetHeader.length + runHeaderLength`). The
    /// payloads follow in the same write, in order.
    @inlinable
    public static func writeRunHeader(first: UnsafeRawBufferPointer, payloadBytes: Int,
                                      into header: UnsafeMutableRawBufferPointer) -> Int {
        let segmentSize = first.count - runHeaderLength
        precondition(header.count >= VirtioNetHeader.length + runHeaderLength && payloadBytes + 28 <= 0xFFFF)
        VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.GSOType.udpL4,
                        headerLength: UInt16(runHeaderLength), gsoSize: UInt16(segmentSize),
                        checksumStart: checksumStart, checksumOffset: checksumOffset).emit(into: header.baseAddress!)
        let frame = UnsafeMutableRawBufferPointer(rebasing: header[VirtioNetHeader.length..<(VirtioNetHeader.length + runHeaderLength)])
        frame.copyMemory(from: UnsafeRawBufferPointer(rebasing: first[0..<runHeaderLength]))
        let ip = UnsafeMutableRawBufferPointer(rebasing: frame[EthernetHeader.length...])
        ip.setU16(UInt16(IPv4Header.length + UDPHeader.length + payloadBytes), at: IPv4PacketView.Field.totalLength)
        ip.setU16(0, at: IPv4PacketView.Field.checksum)
        ip.setU16(InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: ip[0..<IPv4Header.length])), at: IPv4PacketView.Field.checksum)
        let udp = UnsafeMutableRawBufferPointer(rebasing: ip[IPv4Header.length...])
        let udpLength = UDPHeader.length + payloadBytes
        udp.setU16(UInt16(udpLength), at: UDPDatagramView.Field.length)
        let source = IPv4Address(rawValue: ip.u32(at: IPv4PacketView.Field.source))
        let destination = IPv4Address(rawValue: ip.u32(at: IPv4PacketView.Field.destination))
        udp.setU16(~UDPHeader.pseudoHeaderSum(source: source, destination: destination, length: udpLength).value,
                   at: UDPDatagramView.Field.checksum)
        return VirtioNetHeader.length + runHeaderLength
    }

    // MARK: Segments (receiving)

    /// The datagrams a received GSO frame carries at `segmentSize` payload
    /// bytes each, or nil when it is not a UDP frame with a payload (IPv4,
    /// or IPv6 with UDP right after its header, as the kernel's USO6 sends).
    /// Lengths are taken from the frame itself, never from the virtio header.
    @inlinable
    public static func segmentCount(of frame: UnsafeRawBufferPointer, segmentSize: Int) -> Int? {
        guard segmentSize > 0, let payload = segmentedPayloadRange(frame) else { return nil }
        return (payload.count + segmentSize - 1) / segmentSize
    }

    /// Where the payload of a GSO frame starts and ends, or nil.
    @inlinable
    static func segmentedPayloadRange(_ frame: UnsafeRawBufferPointer) -> Range<Int>? {
        let ip = EthernetHeader.length
        if frame.count > ip + IPv6Header.length + UDPHeader.length,
           frame.u16(at: EthernetFrameView.Field.etherType) == EtherType.ipv6.rawValue, frame[ip] >> 4 == 6 {
            guard frame[ip + IPv6PacketView.Field.nextHeader] == IPv6NextHeader.udp else { return nil }
            return (ip + IPv6Header.length + UDPHeader.length)..<frame.count
        }
        guard frame.count > ip + IPv4Header.length,
              frame.u16(at: EthernetFrameView.Field.etherType) == EtherType.ipv4.rawValue,
              frame[ip] >> 4 == 4 else { return nil }
        let headerLength = Int(frame[ip] & 0x0F) * 4
        let start = ip + headerLength + UDPHeader.length
        guard headerLength >= IPv4Header.length, frame[ip + IPv4PacketView.Field.proto] == IPProtocol.udp.rawValue,
              frame.count > start else { return nil }
        return start..<frame.count
    }

    /// Writes datagram `index` of a GSO frame into `out` as a frame of its
    /// own: the headers with its lengths, the identification plus `index`,
    /// the IP checksum and a complete UDP checksum. Returns its length, or nil
    /// when the frame is not one `segmentCount` accepts, `index` is past the
    /// last datagram, or `out` is too small.
    @inlinable
    public static func writeSegment(_ index: Int, of frame: UnsafeRawBufferPointer, segmentSize: Int,
                                    into out: UnsafeMutableRawBufferPointer) -> Int? {
        guard segmentSize > 0, index >= 0, let payload = segmentedPayloadRange(frame) else { return nil }
        let first = payload.lowerBound + index * segmentSize
        guard first < payload.upperBound else { return nil }
        let chunk = min(segmentSize, payload.upperBound - first)
        let headers = payload.lowerBound
        guard out.count >= headers + chunk else { return nil }
        out.copyMemory(from: UnsafeRawBufferPointer(rebasing: frame[0..<headers]))
        UnsafeMutableRawBufferPointer(rebasing: out[headers..<(headers + chunk)])
            .copyMemory(from: UnsafeRawBufferPointer(rebasing: frame[first..<(first + chunk)]))
        let ip = UnsafeMutableRawBufferPointer(rebasing: out[EthernetHeader.length..<(headers + chunk)])
        if ip[0] >> 4 == 6 {
            ip.setU16(UInt16(ip.count - IPv6Header.length), at: IPv6PacketView.Field.payloadLength)
            let udp = UnsafeMutableRawBufferPointer(rebasing: ip[IPv6Header.length...])
            let source = IPv6Address(reading: UnsafeRawBufferPointer(ip), at: IPv6PacketView.Field.source)
            let destination = IPv6Address(reading: UnsafeRawBufferPointer(ip), at: IPv6PacketView.Field.destination)
            UDPHeader(sourcePort: udp.u16(at: UDPDatagramView.Field.sourcePort),
                      destinationPort: udp.u16(at: UDPDatagramView.Field.destinationPort), payloadLength: chunk)
                .emit(intoDatagram: udp, source: source, destination: destination)
            return headers + chunk
        }
        let headerLength = Int(ip[0] & 0x0F) * 4
        ip.setU16(UInt16(ip.count), at: IPv4PacketView.Field.totalLength)
        ip.setU16(ip.u16(at: IPv4PacketView.Field.identification) &+ UInt16(truncatingIfNeeded: index),
                  at: IPv4PacketView.Field.identification)
        ip.setU16(0, at: IPv4PacketView.Field.checksum)
        ip.setU16(InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: ip[0..<headerLength])), at: IPv4PacketView.Field.checksum)
        let udp = UnsafeMutableRawBufferPointer(rebasing: ip[headerLength...])
        let source = IPv4Address(rawValue: ip.u32(at: IPv4PacketView.Field.source))
        let destination = IPv4Address(rawValue: ip.u32(at: IPv4PacketView.Field.destination))
        UDPHeader(sourcePort: udp.u16(at: UDPDatagramView.Field.sourcePort),
                  destinationPort: udp.u16(at: UDPDatagramView.Field.destinationPort), payloadLength: chunk)
            .emit(intoDatagram: udp, source: source, destination: destination)
        return headers + chunk
    }
}

extension UnsafeMutableRawBufferPointer {
    @inlinable @inline(__always)
    func u16(at offset: Int) -> UInt16 {
        UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    func u32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
}
