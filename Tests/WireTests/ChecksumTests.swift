import Testing
import TestSupport
@testable import Wire

/// A plain RFC 1071 implementation, word by word, to check the wide one against.
func referenceChecksum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    var i = 0
    while i + 1 < bytes.count {
        sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
        i += 2
    }
    if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
    while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
    return ~UInt16(sum)
}

@Suite struct ChecksumTests {
    @Test func rfc1071ExampleSumsTo0xddf2() {
        // RFC 1071 section 3: the sum of these bytes is ddf2, so the checksum is 220d.
        var sum = InternetChecksum()
        sum.add(hex("0001 f203 f4f5 f6f7"))
        #expect(sum.value == 0x220D)
    }

    @Test func capturedIPv4HeaderVerifiesAndRecomputes() {
        let header = Array(Captured.echoReply[14..<34])
        var sum = InternetChecksum()
        sum.add(header)
        #expect(sum.verifies)
        var zeroed = header
        zeroed[10] = 0
        zeroed[11] = 0
        #expect(referenceChecksum(zeroed) == 0xF6A4)
        #expect(zeroed.withUnsafeBytes { InternetChecksum.compute($0) } == 0xF6A4)
    }

    @Test func wideSumMatchesWordByWordForEveryLengthAndAlignment() {
        var generator = SystemRandomNumberGenerator()
        for length in 0...200 {
            let storage = (0..<(length + 7)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            for offset in 0..<4 {
                let bytes = Array(storage[offset..<(offset + length)])
                let wide = storage.withUnsafeBytes { InternetChecksum.compute(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + length)])) }
                #expect(wide == referenceChecksum(bytes), "length \(length) offset \(offset)")
            }
        }
    }

    @Test func allOnesDataFoldsCarriesCorrectly() {
        // 0xFFFF words sum to 0xFFFF after end-around carry: checksum 0.
        for count in [1000, 65535] {
            let bytes = [UInt8](repeating: 0xFF, count: count)
            #expect(bytes.withUnsafeBytes { InternetChecksum.compute($0) } == referenceChecksum(bytes))
        }
        let bytes = [UInt8](repeating: 0xFF, count: 1000)
        #expect(bytes.withUnsafeBytes { InternetChecksum.compute($0) } == referenceChecksum(bytes))
        #expect(referenceChecksum(bytes) == 0)
    }

    @Test func numericWordsAddLikeBigEndianBytes() {
        var a = InternetChecksum()
        a.add(UInt32(0xC000_0201))
        a.add(UInt16(0x0011))
        var b = InternetChecksum()
        b.add(hex("c000 0201 0011"))
        #expect(a.value == b.value)
    }
}
