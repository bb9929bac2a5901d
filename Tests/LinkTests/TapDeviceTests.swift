import Testing
@testable import Link

@Suite struct TapDeviceTests {
    @Test(arguments: ["", "a-name-much-too-long-for-linux"])
    func invalidNamesAreRefusedBeforeTouchingTheKernel(_ name: String) {
        #expect(throws: TapError.invalidName(name)) { try TapDevice(name: name) }
    }

    @Test func errorsExplainThemselvesInOneLine() {
        let errors: [TapError] = [.tunMissing, .tunNotAccessible, .permissionDenied(device: "tap0"), .deviceBusy(device: "tap0"),
                                  .systemError(operation: "TUNSETIFF tap0", errno: 5), .invalidName("")]
        for error in errors {
            #expect(!error.description.isEmpty)
            #expect(!error.description.contains("\n"))
        }
        #expect(TapError.permissionDenied(device: "tap0").description.contains("ip tuntap add tap0 mode tap user"))
    }
}
