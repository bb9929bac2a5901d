import ArgumentParser
import CPcap
import Link
import Stack
import Wire

/// `tapstack replay IN.pcap`: feed a capture's frames into the stack core,
/// with no TAP and the capture's timestamps as the clock, and record what
/// the stack sends. The same input always gives the same output, byte for byte.
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a capture into the stack core and record what it sends.",
        discussion: """
        Frames from the stack's own MAC address in the input (its side of a \
        capture taken with --pcap) are skipped; every other frame is fed to \
        the stack at its capture time, with the UDP echo service answering as \
        in 'tapstack run'. Timers run at their deadlines on the capture's clock. \
        Without --out, each frame sent is printed as a tcpdump-like line.
        """
    )

    @Argument(help: ArgumentHelp("The capture to replay (pcap, Ethernet).", valueName: "in.pcap"))
    var input: String

    @Option(name: .long, help: ArgumentHelp("Write the frames the stack sends to this pcap file.", valueName: "out.pcap"))
    var out: String?

    @OptionGroup var service: ServiceOptions

    @Option(name: .long, help: ArgumentHelp("Keep running the timers this many seconds after the last frame.", valueName: "seconds"))
    var tail: Int = 0

    @OptionGroup var link: InterfaceOptions

    func validate() throws {
        guard (0...3600).contains(tail) else { throw ValidationError("--tail must be between 0 and 3600") }
    }

    func run() throws {
        let reader: PcapReader
        do { reader = try PcapReader(path: input) } catch { throw CleanFailure(error.description) }
        guard reader.linkType == DLT_EN10MB else {
            throw CleanFailure("'\(input)' has link type \(reader.linkType), not Ethernet")
        }
        let sink: ReplaySink
        do { sink = try ReplaySink(path: out) } catch { throw CleanFailure(error.description) }

        var configuration = link.stackConfiguration
        service.apply(to: &configuration)
        let stack: NetworkStack
        do { stack = try NetworkStack(configuration: configuration, sink: sink) } catch { throw CleanFailure(error.description) }
        var echo: UDPEndpoint?
        if service.echoPort != 0 {
            let endpoint = stack.openUDP()
            try stack.bind(endpoint, port: service.echoPort)
            echo = endpoint
        }

        var read = 0, fed = 0, skipped = 0
        var started = false
        var now = StackInstant.zero
        while let frame = reader.next() {
            read += 1
            now = StackInstant(nanoseconds: frame.timestampNanoseconds)
            if !started {
                sink.now = now
                stack.start(now: now)
                started = true
            }
            runTimers(stack, sink, until: now)
            // The stack's own frames in the input are what it sent then, not input.
            if frame.bytes.count >= 12, MACAddress(rawValue: frame.bytes[6..<12].reduce(0) { $0 << 8 | UInt64($1) }) == link.mac {
                skipped += 1
                continue
            }
            fed += 1
            sink.now = now
            frame.bytes.withUnsafeBytes { stack.receive(frame: $0, now: now) }
            if let echo { serveEcho(stack, echo, now: now) }
        }
        if started { runTimers(stack, sink, until: now + .seconds(Double(tail))) }
        sink.close()
        let changed = stack.counters.all.filter { $0.value != 0 }.map { "\($0.counter.name) \($0.value)" }
        printError("replay: read \(read) frames, fed \(fed), skipped \(skipped) of the stack's own, sent \(sink.sent)\n"
            + changed.joined(separator: "\n") + "\n")
    }

    /// Runs every timer due up to `end`, each at its own deadline.
    private func runTimers(_ stack: NetworkStack, _ sink: ReplaySink, until end: StackInstant) {
        while let deadline = stack.nextDeadline, deadline <= end {
            sink.now = deadline
            stack.advance(to: deadline)
        }
    }

    /// The echo service, run in step with the frames so the output is deterministic.
    private func serveEcho(_ stack: NetworkStack, _ echo: UDPEndpoint, now: StackInstant) {
        while let datagram = try? stack.receive(from: echo) {
            datagram.payload.withUnsafeBytes { payload in
                try? stack.send(payload, from: echo, to: datagram.source, port: datagram.sourcePort, now: now)
            }
        }
    }
}

/// Where a replayed stack's frames go: a pcap file stamped with the replay
/// clock, or tcpdump-like lines on standard output.
final class ReplaySink: FrameSink {
    private let writer: PcapWriter?
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1514, alignment: 16)
    var now = StackInstant.zero
    private(set) var sent = 0

    init(path: String?) throws(PcapWriter.Error) {
        writer = try path.map { path throws(PcapWriter.Error) in try PcapWriter(path: path) }
    }

    deinit { buffer.deallocate() }

    func reserveFrame() -> UnsafeMutableRawBufferPointer? { buffer }

    /// Replayed frames carry every checksum, as the capture shows them.
    var completesChecksums: Bool { false }
    var maximumFrameLength: Int { buffer.count }

    func commitFrame(length: Int, checksum: ChecksumOffload) {
        sent += 1
        let frame = UnsafeRawBufferPointer(rebasing: buffer[0..<length])
        if let writer {
            writer.write(frame, originalLength: length, seconds: Int(now.nanoseconds / 1_000_000_000),
                         microseconds: Int(now.nanoseconds % 1_000_000_000 / 1000))
        } else {
            let seconds = now.nanoseconds / 1_000_000_000, micros = now.nanoseconds % 1_000_000_000 / 1000
            let fraction = String(micros)
            printOut("\(seconds).\(String(repeating: "0", count: 6 - fraction.count))\(fraction) \(FrameDescription.describe(frame))\n")
        }
    }

    func hasRoom(for frames: Int) -> Bool { true }

    func close() { writer?.close() }
}
