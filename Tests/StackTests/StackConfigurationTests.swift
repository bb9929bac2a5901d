import SocketAPI
import Testing
import TestSupport
@testable import Stack
import Wire

@Suite struct StackConfigurationTests {
    /// An MTU the link's frames cannot carry is refused when the stack is
    /// made (before, a 9000-byte MTU wrote 9014-byte frames into 1514-byte
    /// ring slots: a heap overflow in release builds).
    @Test func anMTUBeyondTheLinksFramesIsRefused() {
        var configuration = StackConfiguration.standard
        configuration.mtu = 9000
        #expect(throws: ConfigurationError.mtuTooLarge(mtu: 9000, maximumFrameLength: 1514)) {
            _ = try NetworkStack(configuration: configuration, sink: CollectingSink(maximumFrameLength: 1514))
        }
        configuration.mtu = 1501
        #expect(throws: ConfigurationError.mtuTooLarge(mtu: 1501, maximumFrameLength: 1514)) {
            _ = try NetworkStack(configuration: configuration, sink: CollectingSink(maximumFrameLength: 1514))
        }
        configuration.mtu = 67
        #expect(throws: ConfigurationError.mtuTooSmall(mtu: 67)) {
            _ = try NetworkStack(configuration: configuration, sink: CollectingSink(maximumFrameLength: 1514))
        }
    }

    /// The largest MTU a link carries is accepted, and a datagram that
    /// needs all of it goes out in one frame that fits the link exactly.
    @Test func theLargestMTUFillsAFrameExactly() throws {
        var configuration = StackConfiguration.standard
        configuration.mtu = 1500
        let sink = CollectingSink(maximumFrameLength: 1514)
        let stack = try NetworkStack(configuration: configuration, sink: sink)
        FrameBuilder.arp(.request).withUnsafeBytes { stack.receive(frame: $0, now: .seconds(1)) }
        _ = sink.take()
        let endpoint = stack.openUDP()
        let payload = [UInt8](repeating: 9, count: 1500 - 28)
        try payload.withUnsafeBytes { try stack.send($0, from: endpoint, to: FrameBuilder.peerIP, port: 9, now: .seconds(1)) }
        #expect(sink.take().map(\.count) == [1514])
    }
}
