/// The Internet checksum (RFC 1071): the ones' complement of the ones'
/// complement sum of 16-bit big-endian words.
///
/// Accumulate pieces with `add`, then read `value`. Only the last piece of
/// bytes may have an odd length (an odd piece in the middle would shift the
/// word alignment of what follows).
public struct InternetChecksum: Sendable {
    @usableFromInline var sum: UInt64 = 0

    @inlinable public init() {}

    /// Adds a 16-bit value, given as a host-order number.
    @inlinable public mutating func add(_ word: UInt16) { sum &+= UInt64(word) }

    /// Adds a 32-bit value as two 16-bit words.
    @inlinable public mutating func add(_ word: UInt32) { sum &+= UInt64(word >> 16) &+ UInt64(word & 0xFFFF) }

    /// Adds bytes as big-endian 16-bit words.
    ///
    /// Native-order 32-bit words are widened into eight 64-bit lanes, 64
    /// bytes per step with no carry handling (a datagram of at most 64 KiB
    /// cannot overflow a lane; the loop compiles to vector loads, widenings
    /// and adds), then 64-bit words with end-around carry, then folded.
    /// Summing native-order words and swapping the folded result gives the
    /// same ones' complement sum as summing big-endian words (RFC 1071 2.B).
    @inlinable
    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var wide: UInt64 = 0
        var offset = 0
        let count = bytes.count
        if count >= 64 {
            var lanes = SIMD8<UInt64>()
            while count &- offset >= 64 {
                let low = bytes.loadUnaligned(fromByteOffset: offset, as: SIMD8<UInt32>.self)
                let high = bytes.loadUnaligned(fromByteOffset: offset &+ 32, as: SIMD8<UInt32>.self)
                lanes &+= SIMD8<UInt64>(truncatingIfNeeded: low) &+ SIMD8<UInt64>(truncatingIfNeeded: high)
                offset &+= 64
            }
            wide = lanes.wrappedSum()
        }
        while count &- offset >= 8 {
            wide = Self.addCarrying(wide, bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            offset &+= 8
        }
        if count &- offset >= 4 {
            wide = Self.addCarrying(wide, UInt64(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            offset &+= 4
        }
        if count - offset >= 2 {
            wide = Self.addCarrying(wide, UInt64(bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
            offset += 2
        }
        if count - offset == 1 {
            // The odd byte is the high half of a word padded with zero: in
            // memory order that is the byte at the lower address.
            var padded: UInt16 = 0
            withUnsafeMutableBytes(of: &padded) { $0[0] = bytes[offset] }
            wide = Self.addCarrying(wide, UInt64(padded))
        }
        let native = Self.fold(wide)
        sum &+= UInt64(UInt16(bigEndian: native))
    }

    /// Adds bytes from an array (convenience for tests and cold paths).
    public mutating func add(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { add($0) }
    }

    /// The checksum to put in a header: the complement of the folded sum.
    @inlinable public var value: UInt16 { ~Self.fold(sum) }

    /// True when the data summed included its own checksum field and it verifies.
    @inlinable public var verifies: Bool { Self.fold(sum) == 0xFFFF }

    /// Checksum of one buffer.
    @inlinable
    public static func compute(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var checksum = InternetChecksum()
        checksum.add(bytes)
        return checksum.value
    }

    @inlinable @inline(__always)
    static func addCarrying(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return sum &+ (overflow ? 1 : 0)
    }

    @inlinable @inline(__always)
    static func fold(_ value: UInt64) -> UInt16 {
        var v = (value >> 32) &+ (value & 0xFFFF_FFFF)
        v = (v >> 32) &+ (v & 0xFFFF_FFFF)
        v = (v >> 16) &+ (v & 0xFFFF)
        v = (v >> 16) &+ (v & 0xFFFF)
        return UInt16(truncatingIfNeeded: v)
    }
}
