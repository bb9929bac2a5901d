import ArgumentParser
import Glibc
import Link
import Logging
import Sockets
import Stack

/// A stack brought up on a TAP device: the device, the driver thread, the
/// stack thread and an optional capture. Shared by every subcommand.
struct StackSession {
    let device: TapDevice
    let driver: EthernetDriver
    let host: NetworkHost
    let capture: PcapWriter?

    /// Opens the device and the capture and starts both threads.
    /// - Throws: `CleanFailure` with one line to show the user.
    init(options: InterfaceOptions, pcap: String?, logger: Logger,
         configure: (inout StackConfiguration) -> Void = { _ in }) throws {
        do { device = try TapDevice(name: options.interface) } catch { throw CleanFailure(error.description) }
        if let pcap {
            do { capture = try PcapWriter(path: pcap) } catch { throw CleanFailure(error.description) }
        } else {
            capture = nil
        }
        driver = EthernetDriver(device: device, capture: capture)
        var configuration = options.stackConfiguration
        configure(&configuration)
        host = NetworkHost(configuration: configuration, link: driver)
        if logger.logLevel <= .debug {
            host.withStack { stack in
                stack.onDrop = { reason in logger.debug("drop: \(reason.name)") }
            }
        }
        driver.start()
        host.start()
    }

    /// Stops the threads (sending what is queued) and closes the capture.
    func stop() {
        host.stop()
        driver.stop()
        capture?.close()
    }

    /// Waits until nothing is left to send: no packet parked for ARP and an
    /// empty TX ring, or `timeout` passes. Returns whether it drained.
    func waitUntilDrained(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let parked = host.withStack { $0.arpCache.pendingBytes > 0 || $0.arpCache.entries.values.contains { $0.state == .incomplete } }
            if !parked && driver.tx.isEmpty { return true }
            usleep(10_000)
        }
        return false
    }

    /// Prints every counter, one `name value` per line, to standard error.
    func printCounters() {
        var lines = driver.counters.snapshot.map { "\($0.0) \($0.1)" }
        lines += host.counters.all.map { "\($0.counter.name) \($0.value)" }
        printError(lines.joined(separator: "\n") + "\n")
    }
}

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

    /// Sleeps until one of the signals arrives and returns it.
    func next() -> Int32 {
        var set = self.set
        var received: Int32 = 0
        while sigwait(&set, &received) != 0 {}
        return received
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

/// The `--log-level` option, shared by the subcommands.
struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. (default: info)", valueName: "level"),
            transform: { text in
                guard let level = Logger.Level(rawValue: text.lowercased()) else {
                    throw ValidationError("'\(text)' is not a log level (trace, debug, info, notice, warning, error, critical)")
                }
                return level
            })
    var logLevel: Logger.Level = .info
}

/// Writes `text` to standard output in full.
func printOut(_ text: String) {
    var text = text
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(1, bytes.baseAddress! + offset, bytes.count - offset)
            if n <= 0 { if errno == EINTR { continue }; return }
            offset += n
        }
    }
}
