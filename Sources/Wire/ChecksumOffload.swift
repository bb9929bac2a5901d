/// What a link knows or asks about a frame's transport checksum, as a NIC
/// with checksum offload does (the virtio-net header of a TAP device).
///
/// - On frames received: `.verified` says the link vouches for the checksum
///   at `start + offset` over the bytes from `start`: the sender, a local
///   kernel, left it partial (the data never crossed a wire), as Linux's
///   CHECKSUM_PARTIAL. The layer owning that checksum does not verify it, and
///   whoever shows the bytes (a capture) completes the field first, since it
///   may hold only the pseudo-header sum.
/// - On frames sent: `.partial` says the field at `start + offset` holds
///   only the pseudo-header sum, and the link (or the kernel behind it)
///   completes it over the bytes from `start`.
public enum ChecksumOffload: Sendable, Equatable {
    /// Nothing known or asked: the checksums in the frame are what they are.
    case none
    /// Received: vouched for by the link (the field may be partial).
    case verified(start: UInt16, offset: UInt16)
    /// To send: the link completes it.
    case partial(start: UInt16, offset: UInt16)

    /// True when `.verified` covers the checksum at `start + offset`.
    @inline(__always)
    public func vouches(start: Int, offset: Int) -> Bool {
        if case .verified(let s, let o) = self { return Int(s) == start && Int(o) == offset }
        return false
    }
}

/// Completes a checksum left partial: sums `frame[start...]` (with the
/// partial value in place) and stores the complement at `start + offset`,
/// as a NIC does for a virtio NEEDS_CSUM frame. A result of zero is sent as
/// 0xFFFF (RFC 768: zero means "no checksum" for UDP; both are zero in
/// ones' complement). Returns false, changing nothing, when the location
/// does not fit the frame.
@discardableResult
public func completeChecksum(in frame: UnsafeMutableRawBufferPointer, start: Int, offset: Int) -> Bool {
    guard let value = completedChecksum(of: UnsafeRawBufferPointer(frame), start: start, offset: offset) else { return false }
    frame.storeBytes(of: value.bigEndian, toByteOffset: start + offset, as: UInt16.self)
    return true
}

/// The value `completeChecksum` would store, without changing the frame; nil
/// when the location does not fit it.
public func completedChecksum(of frame: UnsafeRawBufferPointer, start: Int, offset: Int) -> UInt16? {
    guard start >= 0, offset >= 0, start + offset + 2 <= frame.count else { return nil }
    var checksum = InternetChecksum()
    checksum.add(UnsafeRawBufferPointer(rebasing: frame[start...]))
    return checksum.value == 0 ? 0xFFFF : checksum.value
}
