// In-process benchmarks of the hot paths: `make bench-inprocess`.
// Each reports throughput and mallocs per packet (one iteration = one packet).
import Benchmark
import Glibc
import Link
import SocketAPI
import Stack
import TestSupport
import Wire

/// A sink that keeps only the last frame: no allocation per frame.
final class NullSink: FrameSink {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
    var frames = 0
    var completesChecksums: Bool { false }
    var maximumFrameLength: Int { buffer.count }
    func reserveFrame() -> UnsafeMutableRawBufferPointer? { buffer }
    func commitFrame(length: Int, checksum: ChecksumOffload) { frames += 1 }
    func hasRoom(for count: Int) -> Bool { true }
}

/// A stack that knows the peer, with the echo port bound.
/// Measures frame in → datagram out of `endpoint`'s queue, `frame` each
/// iteration; with `checkFirst`, one unmeasured round must deliver (else
/// that message: the benchmark would measure drops).
func measureReceivePath(_ benchmark: Benchmark, stack: NetworkStack, endpoint: UDPEndpoint, frame: [UInt8],
                        checkFirst: String? = nil) {
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
    defer { out.deallocate() }
    let now = StackInstant.seconds(2)
    if let checkFirst {
        frame.withUnsafeBytes { stack.receive(frame: $0, now: now) }
        precondition((try? stack.receive(from: endpoint, into: out)) != nil, checkFirst)
    }
    benchmark.startMeasurement()
    frame.withUnsafeBytes { bytes in
        for _ in benchmark.scaledIterations {
            stack.receive(frame: bytes, now: now)
            blackHole(try? stack.receive(from: endpoint, into: out))
        }
    }
}

func makeStack(sink: FrameSink) -> (NetworkStack, UDPEndpoint) {
    let stack = try! NetworkStack(configuration: .standard, sink: sink)
    Captured.arpRequest.withUnsafeBytes { stack.receive(frame: $0, now: .seconds(1)) }
    let endpoint = stack.openUDP()
    try! stack.bind(endpoint, port: 7)
    return (stack, endpoint)
}

let metrics: [BenchmarkMetric] = [.throughput, .mallocCountTotal, .wallClock]

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: metrics, maxDuration: .seconds(2), maxIterations: 10_000_000)

    // Frame in → datagram out of the socket's queue.
    Benchmark("UDP receive path (64 B)", configuration: .init(metrics: metrics, scalingFactor: .kilo)) { benchmark in
        let (stack, endpoint) = makeStack(sink: NullSink())
        let frame = FrameBuilder.udpFrame(sourcePort: 40000, destinationPort: 7, payload: [UInt8](repeating: 7, count: 64))
        measureReceivePath(benchmark, stack: stack, endpoint: endpoint, frame: frame)
    }

    // Socket send → frame in the TX ring.
    Benchmark("UDP send path (64 B)", configuration: .init(metrics: metrics, scalingFactor: .kilo)) { benchmark in
        let ring = FrameRing(capacity: 1024, slotSize: 1514)
        let (stack, endpoint) = makeStack(sink: RingFrameSink(ring: ring))
        let payload = [UInt8](repeating: 7, count: 64)
        let now = StackInstant.seconds(2)
        benchmark.startMeasurement()
        payload.withUnsafeBytes { bytes in
            for _ in benchmark.scaledIterations {
                try? stack.send(bytes, from: endpoint, to: FrameBuilder.peerIP, port: 40000, now: now)
                if ring.peek() != nil { ring.release() }
            }
        }
    }

    // The same two paths over IPv6, through a dual-stack socket: the peer
    // resolved by its solicitation first, so no packet waits.
    Benchmark("UDP over IPv6 receive path (64 B)", configuration: .init(metrics: metrics, scalingFactor: .kilo)) { benchmark in
        let (stack, _) = makeStack(sink: NullSink())
        stack.start(now: .seconds(1))  // takes the link-local address
        let endpoint = stack.openUDP(family: .ipv6)
        try! stack.bind(endpoint, to: SocketAddress(IPv6Address.unspecified, 9))
        let frame = FrameBuilder.udp6Frame(sourcePort: 40000, destinationPort: 9, payload: [UInt8](repeating: 7, count: 64))
        measureReceivePath(benchmark, stack: stack, endpoint: endpoint, frame: frame, checkFirst: "the IPv6 receive benchmark receives nothing")
    }

    Benchmark("UDP over IPv6 send path (64 B)", configuration: .init(metrics: metrics, scalingFactor: .kilo)) { benchmark in
        let ring = FrameRing(capacity: 1024, slotSize: 1514)
        let (stack, _) = makeStack(sink: RingFrameSink(ring: ring))
        stack.start(now: .seconds(1))
        FrameBuilder.neighborSolicitation().withUnsafeBytes { stack.receive(frame: $0, now: .seconds(1)) }
        while ring.peek() != nil { ring.release() }
        let endpoint = stack.openUDP(family: .ipv6)
        let payload = [UInt8](repeating: 7, count: 64)
        let peer = SocketAddress(FrameBuilder.peerLinkLocal, 40000)
        let now = StackInstant.seconds(1.5)  // before the stale neighbour's delay ends: no probe
        let sent = payload.withUnsafeBytes { (try? stack.send($0, from: endpoint, to: peer, now: now)) != nil }
        precondition(sent && ring.peek() != nil, "the IPv6 send benchmark sends nothing")
        benchmark.startMeasurement()
        payload.withUnsafeBytes { bytes in
            for _ in benchmark.scaledIterations {
                try? stack.send(bytes, from: endpoint, to: peer, now: now)
                while ring.peek() != nil { ring.release() }
            }
        }
    }

    // Echo request in → echo reply out.
    Benchmark("ICMP echo (56 B)", configuration: .init(metrics: metrics, scalingFactor: .kilo)) { benchmark in
        let sink = NullSink()
        let (stack, _) = makeStack(sink: sink)
        let now = StackInstant.seconds(2)
        benchmark.startMeasurement()
        Captured.echoRequest.withUnsafeBytes { bytes in
            for _ in benchmark.scaledIterations { stack.receive(frame: bytes, now: now) }
        }
        blackHole(sink.frames)
    }

    // One thread produces 64-byte frames, this one consumes them.
    Benchmark("FIFO transfer between two threads (64 B)", configuration: .init(metrics: metrics, scalingFactor: .kilo)) { benchmark in
        let ring = FrameRing(capacity: 1024, slotSize: 1514)
        let total = benchmark.scaledIterations.count
        let frame = [UInt8](repeating: 1, count: 64)
        benchmark.startMeasurement()
        let producer = JoinableThread(name: "producer") {
            frame.withUnsafeBytes { bytes in
                var sent = 0
                while sent < total { if ring.push(bytes) { sent += 1 } }
            }
        }
        var received = 0
        while received < total {
            if ring.peek() != nil {
                ring.release()
                received += 1
            }
        }
        producer.join()
    }
}

/// The TX ring as the stack's sink, as `NetworkHost` uses it.
final class RingFrameSink: FrameSink {
    let ring: FrameRing
    init(ring: FrameRing) { self.ring = ring }
    var completesChecksums: Bool { false }
    var maximumFrameLength: Int { ring.slotSize }
    func reserveFrame() -> UnsafeMutableRawBufferPointer? { ring.reserve() }
    func commitFrame(length: Int, checksum: ChecksumOffload) { ring.commit(length: length, checksum: checksum) }
    func hasRoom(for count: Int) -> Bool { ring.hasRoom(for: count) }
}
