import Testing
@testable import Wire

@Suite struct AddressesTests {
    @Test func macParsesAndPrints() {
        let mac = MACAddress("02:00:00:00:00:02")
        #expect(mac == MACAddress(0x02, 0, 0, 0, 0, 0x02))
        #expect(mac?.description == "02:00:00:00:00:02")
        #expect(MACAddress("BE-5E-63-13-BD-1B")?.description == "be:5e:63:13:bd:1b")
    }

    @Test(arguments: ["", "02:00:00:00:00", "02:00:00:00:00:02:03", "zz:00:00:00:00:02", "002:00:00:00:00:02", "02::00:00:00:02"])
    func malformedMACIsRejected(_ text: String) {
        #expect(MACAddress(text) == nil)
    }

    @Test func macGroupBit() {
        #expect(MACAddress.broadcast.isMulticast)
        #expect(MACAddress("01:00:5e:00:00:01")!.isMulticast)
        #expect(!MACAddress("02:00:00:00:00:02")!.isMulticast)
    }

    @Test func ipv4ParsesAndPrints() {
        #expect(IPv4Address("192.0.2.2") == IPv4Address(192, 0, 2, 2))
        #expect(IPv4Address("192.0.2.2")?.rawValue == 0xC000_0202)
        #expect(IPv4Address(rawValue: 0xC000_0201).description == "192.0.2.1")
    }

    @Test(arguments: ["", "banana", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1..2.3", "1.2.3.-4", "01234.1.1.1", "1.2.3.4 "])
    func malformedIPv4IsRejected(_ text: String) {
        #expect(IPv4Address(text) == nil)
    }

    @Test func interfaceKnowsItsSubnet() throws {
        let interface = try #require(IPv4Interface("192.0.2.2/24"))
        #expect(interface.network == IPv4Address(192, 0, 2, 0))
        #expect(interface.subnetBroadcast == IPv4Address(192, 0, 2, 255))
        #expect(interface.contains(IPv4Address(192, 0, 2, 200)))
        #expect(!interface.contains(IPv4Address(192, 0, 3, 1)))
        #expect(IPv4Interface("192.0.2.2/33") == nil)
        #expect(IPv4Interface("192.0.2.2") == nil)
        #expect(IPv4Interface("10.0.0.1/0")?.contains(IPv4Address(8, 8, 8, 8)) == true)
    }

    @Test func addressClasses() {
        #expect(IPv4Address("224.0.0.1")!.isMulticast)
        #expect(IPv4Address("127.0.0.1")!.isLoopback)
        #expect(IPv4Address("240.0.0.1")!.isReserved)
        #expect(!IPv4Address.broadcast.isReserved)
        #expect(IPv4Address.broadcast.isLimitedBroadcast)
    }
}
