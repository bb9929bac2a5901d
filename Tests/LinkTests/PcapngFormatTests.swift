import Link
import Testing
import Wire

@Suite struct PcapngFormatTests {
    let interface = PcapngFormat.Interface(name: "tap0", description: "tapstack test", address: IPv4Address(192, 0, 2, 2),
                                           netmask: IPv4Address(255, 255, 255, 0), mac: MACAddress(2, 0, 0, 0, 0, 2))

    @Test func theInterfaceDescriptionReadsBackAsWritten() {
        let file = PcapngFormat.sectionHeader(application: "tapstack")
            + PcapngFormat.interfaceDescription(interface, snapLength: 65535)
        #expect(PcapngFormat.firstInterface(in: file) == interface)
        #expect(PcapngFormat.firstInterface(in: Array(file.prefix(27))) == nil)
        #expect(PcapngFormat.firstInterface(in: [UInt8](repeating: 0, count: 64)) == nil)
    }

    @Test func anEnhancedPacketBlockHoldsTheFrameItsDirectionAndComment() {
        let frame: [UInt8] = [1, 2, 3, 4, 5]
        let block = frame.withUnsafeBytes {
            PcapngFormat.enhancedPacket($0, originalLength: 60, microseconds: 0x1_0000_0002, direction: .inbound, comment: "why")
        }
        let expected: [UInt8] = [
            6, 0, 0, 0, 60, 0, 0, 0,   // type 6, total length 60
            0, 0, 0, 0,                // interface 0
            1, 0, 0, 0, 2, 0, 0, 0,    // timestamp high, low
            5, 0, 0, 0, 60, 0, 0, 0,   // captured 5, original 60
            1, 2, 3, 4, 5, 0, 0, 0,    // the frame, padded to 4
            1, 0, 3, 0, 0x77, 0x68, 0x79, 0,  // opt_comment "why", padded
            2, 0, 4, 0, 1, 0, 0, 0,    // epb_flags: inbound
            0, 0, 0, 0,                // end of options
            60, 0, 0, 0,               // total length again
        ]
        #expect(block == expected)
    }

    @Test func aFrameWithoutDirectionOrCommentHasNoOptions() {
        let block = [UInt8](repeating: 7, count: 4).withUnsafeBytes {
            PcapngFormat.enhancedPacket($0, originalLength: 4, microseconds: 0, direction: nil, comment: nil)
        }
        #expect(block.count == 12 + 20 + 4)
        #expect(Array(block[4..<8]) == [36, 0, 0, 0])
    }

    @Test func theFormatFollowsTheFileName() {
        #expect(CaptureFormat.forPath("x.pcapng") == .pcapng)
        #expect(CaptureFormat.forPath("x.pcap") == .pcap)
        #expect(CaptureFormat.forPath("-") == .pcap)
    }
}
