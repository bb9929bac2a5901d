import ArgumentParser
import Glibc
import Link
import Logging
import Sockets
import Stack
import Wire

/// A stack brought up on a TAP device: the device, its link, the executor
/// and an optional capture. Shared by every subcommand.
struct StackSession {
    let device: TapDevice
    let link: TapLink
    let host: NetworkHost
    let capture: PacketCapture?

    /// Opens the device and the capture and starts the threads.
    /// - Throws: `CleanFailure` with one line to show the user.
    /// - Parameter noServiceAt: the service path a command looked for first;
    ///   named in the error when the device cannot be opened (then it is
    ///   neither served by a running stack nor free for one of our own).
    init(options: InterfaceOptions, capture captureOptions: CaptureOptions?, logger: Logger,
         noServiceAt servicePath: String? = nil, echoPort: UInt16 = 0,
         configure: (inout StackConfiguration) -> Void = { _ in }) throws {
        do { device = try TapDevice(name: options.interface, mode: options.mode, offloads: options.offload) } catch {
            guard let servicePath else { throw CleanFailure(error.description) }
            throw CleanFailure("\(error.description); and no running tapstack serves \(servicePath) to use instead (a stack started with --no-socket or another --socket cannot be shared)")
        }
        capture = try captureOptions?.makeCapture(for: options, echoPort: echoPort)
        var observer: (@Sendable (FrameDirection, UnsafeRawBufferPointer) -> Void)?
        if logger.logLevel <= .trace {
            observer = { direction, frame in
                logger.trace("\(direction == .inbound ? "in " : "out") \(FrameDescription.describe(frame))")
            }
        }
        link = TapLink(device: device, ioMode: options.linkIO, capture: capture, observer: observer)
        var configuration = options.stackConfiguration
        configure(&configuration)
        do { host = try NetworkHost(configuration: configuration, link: link, options: options.executorOptions) } catch {
            throw CleanFailure(error.description)
        }
        host.withStack { stack in
            stack.onAddressConflict = { address in
                logger.warning("IPv6 address \(address) is in use on the link (duplicate address detection): not using it")
            }
        }
        let debug = logger.logLevel <= .debug
        if debug || capture != nil {
            let link = self.link
            let captured = capture != nil
            host.withStack { stack in
                stack.onDrop = { reason, frame in
                    // A drop of the frame being received: the capture comments on it.
                    if captured, frame != nil { link.noteDrop(reason: reason.rawValue) }
                    if debug { logger.debug("drop \(reason.name)\(frame.map { ": " + FrameDescription.describe($0) } ?? "")") }
                }
            }
        }
        capture?.start()
        host.start()
        if let reason = link.ioUringUnavailableReason { logger.notice("\(reason)") }
        if let reason = host.pinningFailureReason { logger.notice("\(reason)") }
        let description = options.executorDescription(adaptiveLimit: host.idlePollingState.limit)
        if options.busyPoll == .adaptive { logger.info("executor: \(description)") }
        logger.debug("link: \(link.ioMode.rawValue), offloads: \(device.offloads), executor: \(description)")
    }

    /// Stops the threads (sending what is queued) and closes the capture.
    /// A capture writer stuck on a pipe nobody reads is abandoned: then the
    /// process must leave with `_exit`, since a normal exit would flush that
    /// stream and block forever.
    func stop() {
        host.stop()
        if let capture, !capture.stop() {
            printError("tapstack: the capture reader stopped reading; unwritten frames are lost\n")
            captureAbandoned = true
        }
    }

    /// Waits until nothing is left to send: no packet parked for ARP and an
    /// empty TX ring, or `timeout` passes. Returns whether it drained.
    func waitUntilDrained(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let parked = host.withStack { $0.arpCache.pendingBytes > 0 || $0.arpCache.entries.values.contains { $0.state == .incomplete } }
            if !parked && link.tx.isEmpty { return true }
            usleep(10_000)
        }
        return false
    }

    /// Every counter: the link's, the device's, the capture's, the stack's, in a stable order.
    func counterValues() -> [(name: String, value: UInt64)] {
        var values = link.counters.snapshot.map { (name: $0.0, value: $0.1) }
        // The kernel's side of the device (its drops toward us are seen nowhere else).
        values += (device.statistics ?? DeviceStatistics()).snapshot.map { (name: $0.0, value: $0.1) }
        if let capture { values += capture.snapshot.map { (name: $0.0, value: $0.1) } }
        values += host.counters.all.map { (name: $0.counter.name, value: $0.value) }
        return values
    }

    /// Prints every counter, one `name value` per line, to standard error.
    func printCounters() {
        printError(counterValues().map { "\($0.name) \($0.value)" }.joined(separator: "\n") + "\n")
    }
}

/// Set when a capture writer was left blocked; `Main` then ends with `_exit`.
nonisolated(unsafe) var captureAbandoned = false

/// Signals taken by `sigwait` on the main thread. Create it before any other
/// thread exists, so every thread inherits the blocked mask.
struct SignalWaiter {
    /// Sent by a worker thread to the process to say it has finished.
    static let done = SIGUSR2

    private var set = sigset_t()

    init() {
        sigemptyset(&set)
        for signal in [SIGINT, SIGTERM, SIGUSR1, Self.done] {
            // A shell may start us with SIGINT ignored; restore the default so it arrives.
            Glibc.signal(signal, SIG_DFL)
            sigaddset(&set, signal)
        }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Sleeps until one of the signals arrives and returns it; with a
    /// positive timeout, returns nil when that many seconds pass first.
    func next(timeoutSeconds: Int = 0) -> Int32? {
        var set = self.set
        guard timeoutSeconds > 0 else {
            var received: Int32 = 0
            while sigwait(&set, &received) != 0 {}
            return received
        }
        var timeout = timespec(tv_sec: timeoutSeconds, tv_nsec: 0)
        while true {
            let received = sigtimedwait(&set, nil, &timeout)
            if received > 0 { return received }
            if errno == EAGAIN { return nil }
        }
    }

    /// Wakes the main thread's `next()` with `done`. Any thread.
    static func finish() { kill(getpid(), done) }
}

/// Sets up swift-log on standard error at `level`.
func makeLogger(level: Logger.Level) -> Logger {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    var logger = Logger(label: "tapstack")
    logger.logLevel = level
    return logger
}

/// The capture options, shared by the subcommands.
struct CaptureOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Record every frame in and out to this capture file; '-' streams to standard output (flushed per frame, for 'tcpdump -r -' or 'wireshark -k -i -'). A name ending in .pcapng writes pcapng: each frame's direction, and the reason on every frame the stack dropped.", valueName: "file"))
    var pcap: String?

    @Option(name: .long, help: ArgumentHelp("pcap or pcapng. (default: pcapng for a file ending in .pcapng, else pcap)", valueName: "format"))
    var pcapFormat: CaptureFormat?

    @Option(name: .long, help: ArgumentHelp("Keep only the frames this tcpdump expression matches, e.g. 'icmp' or 'udp port 7'.", valueName: "expression"))
    var pcapFilter: String?

    @Option(name: .long, help: ArgumentHelp("Bytes kept of each captured frame, 60 to 65535.", valueName: "bytes"))
    var snaplen: Int = 65535

    func validate() throws {
        guard (60...65535).contains(snaplen) else { throw ValidationError("--snaplen must be between 60 and 65535, not \(snaplen)") }
        if pcap == nil, pcapFilter != nil { throw ValidationError("--pcap-filter needs --pcap") }
        if pcap == nil, pcapFormat != nil { throw ValidationError("--pcap-format needs --pcap") }
    }

    /// The capture these options ask for, not yet started; nil without --pcap.
    /// - Parameter echoPort: the echo service's port (0: none), named in a
    ///   pcapng capture's interface description so that a replay serves it too.
    func makeCapture(for options: InterfaceOptions, echoPort: UInt16) throws -> PacketCapture? {
        guard let pcap else { return nil }
        do {
            let address = options.address
            let interface = PcapngFormat.Interface(
                name: options.interface,
                description: "tapstack \(TapstackVersion.current) on \(options.interface): \(address) \(options.mac), "
                    + (echoPort == 0 ? "no UDP echo" : "UDP echo on port \(echoPort)"),
                address: address.address, netmask: IPv4Address(rawValue: address.netmask), mac: options.mac)
            let writer = try PcapWriter(path: pcap, snapLength: snaplen, filter: pcapFilter,
                                        format: pcapFormat ?? .forPath(pcap), interface: interface, rawIP: options.mode == .tun)
            return PacketCapture(writer: writer, flushEachFrame: pcap == "-",
                                 dropReasonNames: StackCounter.allCases.map(\.name))
        } catch {
            throw CleanFailure(error.description)
        }
    }
}

/// The `--log-level` option, shared by the subcommands.
struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("trace (adds a line per frame in and out), debug (adds a line per drop, with its reason), info, notice, warning, error or critical. (default: info)", valueName: "level"),
            transform: { text in
                guard let level = Logger.Level(rawValue: text.lowercased()) else {
                    throw ValidationError("'\(text)' is not a log level (trace, debug, info, notice, warning, error, critical)")
                }
                return level
            })
    var logLevel: Logger.Level = .info
}

extension CaptureFormat: ExpressibleByArgument {}
