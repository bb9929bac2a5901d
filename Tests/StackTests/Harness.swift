import Stack
import TestSupport
import SocketAPI
import Wire

/// Drives a `NetworkStack` with no threads and no device: frames in, a clock
/// moved by hand, frames out collected.
final class Harness {
    let sink = CollectingSink()
    let stack: NetworkStack
    var now = StackInstant.seconds(1000)

    init(_ configure: (inout StackConfiguration) -> Void = { _ in }) {
        var configuration = StackConfiguration.standard
        configure(&configuration)
        stack = try! NetworkStack(configuration: configuration, sink: sink)
    }

    func receive(_ frame: [UInt8]) {
        frame.withUnsafeBytes { stack.receive(frame: $0, now: now) }
    }

    /// Frames sent since the last call.
    func sent() -> [[UInt8]] { sink.take() }

    func advance(seconds: Double) {
        now = now + StackDuration.seconds(seconds)
        stack.advance(to: now)
    }

    /// Lets the stack learn the peer's MAC (as the kernel's first ARP does) and forgets the reply.
    func learnPeer() {
        receive(FrameBuilder.arp(.request))
        _ = sent()
    }

    func counter(_ counter: StackCounter) -> UInt64 { stack.counters[counter] }

    /// A bound endpoint that records its readiness events.
    func boundEndpoint(port: UInt16) throws -> (UDPEndpoint, EventLog) {
        let endpoint = stack.openUDP()
        let log = EventLog()
        endpoint.onEvent = { log.events.append($0) }
        try stack.bind(endpoint, port: port)
        return (endpoint, log)
    }

    func send(_ payload: [UInt8], from endpoint: UDPEndpoint, to address: IPv4Address = FrameBuilder.peerIP,
              port: UInt16, options: DatagramSendOptions = DatagramSendOptions()) throws(SocketError) {
        let result: Result<Void, SocketError> = payload.withUnsafeBytes { bytes in
            do throws(SocketError) {
                try stack.send(bytes, from: endpoint, to: (address, port), options: options, now: now)
                return .success(())
            } catch { return .failure(error) }
        }
        try result.get()
    }
}

final class EventLog {
    var events: [ReadinessEvents] = []
}
