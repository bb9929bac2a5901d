import ArgumentParser
import CPcap
import Link
import Glibc
import Stack
import Wire

/// `tapstack replay IN.pcap`: feed a capture's frames into the stack core,
/// with no TAP and the capture's timestamps as the clock, and record what
/// the stack sends. The same input always gives the same output, byte for byte.
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a capture into the stack core and record what it sends.",
        discussion: """
        Reads pcap or pcapng. The stack takes the identity of the one that \
        made the capture: from a pcapng capture's interface description \
        (address, prefix, MAC, echo port), else from the stack's announcement \
        in it (address and MAC); flags given override it, with a warning where \
        they disagree. Frames from the stack's own MAC address in the input \
        (its side of the capture) are skipped; every other frame is fed to the \
        stack at its capture time, with the UDP echo service answering as in \
        'tapstack run'. Timers run at their deadlines on the capture's clock. \
        Without --out, each frame sent is printed as a tcpdump-like line (UTC).
        """
    )

    @Argument(help: ArgumentHelp("The capture to replay (pcap or pcapng, Ethernet; '-' for standard input).", valueName: "in.pcap"))
    var input: String

    @Option(name: .long, help: ArgumentHelp("Write the frames the stack sends to this capture file (pcapng if it ends in .pcapng).", valueName: "out.pcap"))
    var out: String?

    @Option(name: .long, help: ArgumentHelp("Keep running the timers this many seconds after the last frame.", valueName: "seconds"))
    var tail: Int = 0

    @Option(name: .long, help: ArgumentHelp("The stack's IPv4 address and prefix length. (default: the capture's, else 192.0.2.2/24)", valueName: "a.b.c.d/len"),
            transform: parseInterfaceAddress)
    var address: IPv4Interface?

    @Option(name: .long, help: ArgumentHelp("The stack's Ethernet address. (default: the capture's, else 02:00:00:00:00:02)", valueName: "aa:bb:cc:dd:ee:ff"),
            transform: parseStackMAC)
    var mac: MACAddress?

    @Option(name: .long, help: ArgumentHelp("Default gateway for destinations off the subnet (none by default).", valueName: "a.b.c.d"),
            transform: parseGateway)
    var gateway: IPv4Address?

    @Option(name: .long, help: ArgumentHelp("An IPv6 address of the stack beside its link-local one (repeatable), as the run had; 'auto' takes them from router advertisements in the capture.", valueName: "x:x::x[/len]|auto"),
            transform: parseIPv6Option)
    var address6: [IPv6AddressOption] = []

    @Option(name: .long, help: "IP MTU of the link, 576 to 1500.")
    var mtu: Int = 1500

    @Option(name: .long, help: "UDP port of the echo service; 0 turns it off. (default: the capture's, else 7)")
    var echoPort: UInt16?

    @Option(name: .long, help: ArgumentHelp("Seconds an incomplete fragmented datagram is kept, 1 to 120.", valueName: "seconds"))
    var reassemblyTimeout: Int = 30

    func validate() throws {
        guard (0...3600).contains(tail) else { throw ValidationError("--tail must be between 0 and 3600") }
        guard (576...1500).contains(mtu) else { throw ValidationError("--mtu must be between 576 and 1500, not \(mtu)") }
        guard (1...120).contains(reassemblyTimeout) else {
            throw ValidationError("--reassembly-timeout must be between 1 and 120 seconds, not \(reassemblyTimeout)")
        }
    }

    /// The identity the capture shows for the stack that made it.
    struct CapturedIdentity {
        var address: IPv4Interface?
        var mac: MACAddress?
        var echoPort: UInt16?
        var source = "nothing in the capture"
    }

    /// Reads the identity from a pcapng interface description, or from the
    /// stack's gratuitous ARP in the capture's first frames.
    func capturedIdentity() -> CapturedIdentity {
        guard input != "-", let file = fopen(input, "r") else { return CapturedIdentity() }
        var head = [UInt8](repeating: 0, count: 65536)
        let count = fread(&head, 1, head.count, file)
        fclose(file)
        if let interface = PcapngFormat.firstInterface(in: Array(head[0..<count])), interface.description.hasPrefix("tapstack") {
            var identity = CapturedIdentity(source: "the capture's interface description")
            if let address = interface.address, let mask = interface.netmask {
                identity.address = IPv4Interface(address: address, prefixLength: mask.rawValue.nonzeroBitCount)
            }
            identity.mac = interface.mac
            if interface.description.hasSuffix("no UDP echo") {
                identity.echoPort = 0
            } else if let last = interface.description.split(separator: " ").last,
                      interface.description.contains("UDP echo on port "), let port = UInt16(last) {
                identity.echoPort = port
            }
            return identity
        }
        // Classic pcap: the announcement (an ARP request for its own address) names the stack.
        guard let reader = try? PcapReader(path: input) else { return CapturedIdentity() }
        for _ in 0..<1000 {
            guard let frame = reader.next() else { break }
            let bytes = frame.bytes
            guard bytes.count >= 42, bytes[12] == 0x08, bytes[13] == 0x06, bytes[20] == 0, bytes[21] == 1,
                  bytes[28..<32] == bytes[38..<42] else { continue }
            return CapturedIdentity(address: IPv4Interface(address: IPv4Address(bytes[28], bytes[29], bytes[30], bytes[31]), prefixLength: 24),
                                    mac: MACAddress(bytes[22], bytes[23], bytes[24], bytes[25], bytes[26], bytes[27]),
                                    source: "the stack's announcement in the capture (prefix length assumed /24)")
        }
        return CapturedIdentity()
    }

    /// The stack's configuration: the flags, else the capture's identity, else
    /// the defaults; a warning for each flag that disagrees with the capture.
    func resolvedConfiguration() throws -> (StackConfiguration, echoPort: UInt16) {
        let captured = capturedIdentity()
        func warn(_ flag: String, _ given: String, _ found: String) {
            printError("replay: warning: \(flag) \(given) differs from \(found) in the capture (\(captured.source)); replaying as \(given)\n")
        }
        if let address, let found = captured.address, found != address { warn("--address", "\(address)", "\(found)") }
        if let mac, let found = captured.mac, found != mac { warn("--mac", "\(mac)", "\(found)") }
        if let echoPort, let found = captured.echoPort, found != echoPort { warn("--echo-port", "\(echoPort)", "\(found)") }
        let interface = address ?? captured.address ?? IPv4Interface("192.0.2.2/24")!
        if let gateway, !interface.contains(gateway) { throw CleanFailure("gateway \(gateway) is not on the subnet \(interface)") }
        var configuration = StackConfiguration(mac: mac ?? captured.mac ?? MACAddress("02:00:00:00:00:02")!, interface: interface, gateway: gateway)
        configuration.mtu = mtu
        configuration.reassemblyTimeout = .seconds(Double(reassemblyTimeout))
        configuration.ipv6Addresses = address6.compactMap { if case .address(let address) = $0 { address } else { nil } }
        configuration.ipv6Autoconfiguration = address6.contains(.automatic)
        return (configuration, echoPort ?? captured.echoPort ?? 7)
    }

    func run() throws {
        let reader: PcapReader
        do { reader = try PcapReader(path: input) } catch { throw CleanFailure(error.description) }
        // Raw IP: a TUN device's capture (--mode tun), replayed as that stack ran: no ARP.
        let rawIP = reader.linkType == DLT_RAW || reader.linkType == 101
        guard reader.linkType == DLT_EN10MB || rawIP else {
            throw CleanFailure("'\(input)' has link type \(reader.linkType), neither Ethernet nor raw IP")
        }
        var (configuration, echoPort) = try resolvedConfiguration()
        configuration.resolvesLinkAddresses = !rawIP
        let sink: ReplaySink
        do { sink = try ReplaySink(path: out, rawIP: rawIP) } catch { throw CleanFailure(error.description) }

        let stack: NetworkStack
        do { stack = try NetworkStack(configuration: configuration, sink: sink) } catch { throw CleanFailure(error.description) }
        var echo: UDPEndpoint?
        if echoPort != 0 {
            let endpoint = stack.openUDP(family: .ipv6)  // dual-stack, as the run's echo service
            try stack.bind(endpoint, port: echoPort)
            echo = endpoint
        }
        let ownMAC = configuration.mac

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
            // The stack's own frames in the input are what it sent then, not
            // input: by their source MAC, or for raw IP their source address.
            let own = rawIP
                ? isOwnPacket(frame.bytes, configuration)
                : frame.bytes.count >= 12 && MACAddress(rawValue: frame.bytes[6..<12].reduce(0) { $0 << 8 | UInt64($1) }) == ownMAC
            if own {
                skipped += 1
                continue
            }
            fed += 1
            sink.now = now
            if rawIP {
                // As the TUN link hands packets over: behind a made-up Ethernet header.
                let version = frame.bytes.first.map { $0 >> 4 } ?? 0
                let header: [UInt8] = [UInt8](repeating: 0, count: 12) + (version == 6 ? [0x86, 0xDD] : [0x08, 0x00])
                (header + frame.bytes).withUnsafeBytes { stack.receive(frame: $0, now: now) }
            } else {
                frame.bytes.withUnsafeBytes { stack.receive(frame: $0, now: now) }
            }
            if let echo { serveEcho(stack, echo, now: now) }
        }
        if started { runTimers(stack, sink, until: now + .seconds(Double(tail))) }
        sink.close()
        let changed = stack.counters.all.filter { $0.value != 0 }.map { "\($0.counter.name) \($0.value)" }
        printError("replay: as \(configuration.interface) \(configuration.mac)\(echoPort == 0 ? "" : ", echo on port \(echoPort)"): "
            + "read \(read) frames, fed \(fed), skipped \(skipped) of the stack's own, sent \(sink.sent)\n"
            + changed.joined(separator: "\n") + "\n")
    }

    /// A raw IP packet from one of the stack's own addresses (IPv4, link-local or configured IPv6).
    private func isOwnPacket(_ bytes: [UInt8], _ configuration: StackConfiguration) -> Bool {
        if bytes.first.map({ $0 >> 4 }) == 6 {
            guard bytes.count >= 24 else { return false }
            let source = bytes.withUnsafeBytes { IPv6Address(reading: $0, at: 8) }
            return source == IPv6Address.linkLocal(from: configuration.mac) || configuration.ipv6Addresses.contains(source)
        }
        return bytes.count >= 16 && bytes[12..<16].elementsEqual(configuration.interface.address.octets)
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
                try? stack.send(payload, from: echo, to: datagram.sourceAddress, now: now)
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

    init(path: String?, rawIP: Bool = false) throws(PcapWriter.Error) {
        writer = try path.map { path throws(PcapWriter.Error) in try PcapWriter(path: path, format: .forPath(path), rawIP: rawIP) }
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
            printOut("\(Self.clockTime(now)) \(FrameDescription.describe(frame))\n")
        }
    }

    func hasRoom(for frames: Int) -> Bool { true }

    /// `HH:MM:SS.uuuuuu` in UTC, as `TZ=UTC tcpdump -r` prints a frame's time.
    static func clockTime(_ instant: StackInstant) -> String {
        let seconds = instant.nanoseconds / 1_000_000_000, micros = instant.nanoseconds % 1_000_000_000 / 1000
        let ofDay = seconds % 86_400
        func two(_ value: UInt64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let fraction = String(micros)
        return "\(two(ofDay / 3600)):\(two(ofDay / 60 % 60)):\(two(ofDay % 60)).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
    }

    func close() { writer?.close() }
}
