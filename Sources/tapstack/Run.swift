import ArgumentParser
import Glibc
import Link
import Logging
import Sockets
import Stack
import Wire

/// `tapstack run`: bring the stack up on a TAP device and serve UDP echo.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the stack on a TAP device, answering ARP and ping and echoing UDP.",
        discussion: """
        Creates the TAP device (or attaches to a persistent one made with \
        'ip tuntap add NAME mode tap user USER') and runs until SIGINT or SIGTERM, \
        then exits 0. SIGUSR1 prints every counter to standard error; the \
        counters are also printed at exit.
        """
    )

    @OptionGroup var link: InterfaceOptions

    @Option(name: .long, help: "UDP port of the echo service; 0 turns it off.")
    var echoPort: UInt16 = 7

    @Option(name: .long, help: ArgumentHelp("Record every frame in and out to this pcap file.", valueName: "file"))
    var pcap: String?

    @Option(name: .long, help: ArgumentHelp("Seconds an incomplete fragmented datagram is kept, 1 to 120.", valueName: "seconds"))
    var reassemblyTimeout: Int = 30

    func validate() throws {
        guard (1...120).contains(reassemblyTimeout) else {
            throw ValidationError("--reassembly-timeout must be between 1 and 120 seconds, not \(reassemblyTimeout)")
        }
    }

    @Option(name: .long, help: ArgumentHelp("trace, debug, info, notice, warning, error or critical. (default: info)", valueName: "level"),
            transform: { text in
                guard let level = Logger.Level(rawValue: text.lowercased()) else {
                    throw ValidationError("'\(text)' is not a log level (trace, debug, info, notice, warning, error, critical)")
                }
                return level
            })
    var logLevel: Logger.Level = .info

    func run() throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "tapstack")

        // Signals are taken by sigwait on this thread only: block them before
        // any other thread exists, so every thread inherits the mask.
        // A shell starting us in the background may have set SIGINT to
        // ignored; restore the defaults so sigwait sees every one.
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGUSR1] {
            Glibc.signal(signal, SIG_DFL)
            sigaddset(&signals, signal)
        }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let device: TapDevice
        do { device = try TapDevice(name: link.interface) } catch { throw CleanFailure(error.description) }
        var capture: PcapWriter?
        if let pcap {
            do { capture = try PcapWriter(path: pcap) } catch { throw CleanFailure(error.description) }
        }

        let driver = EthernetDriver(device: device, capture: capture)
        var configuration = link.stackConfiguration
        configuration.reassemblyTimeout = .seconds(Double(reassemblyTimeout))
        let host = NetworkHost(configuration: configuration, link: driver)
        if level <= .debug {
            let dropLogger = logger
            host.withStack { stack in
                stack.onDrop = { reason in dropLogger.debug("drop: \(reason.name)") }
            }
        }
        driver.start()
        host.start()

        var echo: EchoService?
        if echoPort != 0 {
            do { echo = try EchoService(host: host, port: echoPort, logger: logger) } catch {
                throw CleanFailure("cannot bind the echo service to UDP port \(echoPort): \(error)")
            }
        }
        logger.info("tapstack up on \(device.name)\(device.isPersistent ? " (persistent)" : ""): \(link.address) \(link.mac)\(echo != nil ? ", UDP echo on port \(echoPort)" : "")")

        waitForStop(signals: signals, host: host, driver: driver)

        logger.info("stopping")
        echo?.stop()
        host.stop()
        driver.stop()
        capture?.close()
        printCounters(host: host, driver: driver)
    }

    /// Sleeps in sigwait until SIGINT or SIGTERM; SIGUSR1 prints the counters.
    private func waitForStop(signals: sigset_t, host: NetworkHost, driver: EthernetDriver) {
        var signals = signals
        while true {
            var received: Int32 = 0
            guard sigwait(&signals, &received) == 0 else { continue }
            if received == SIGUSR1 {
                printCounters(host: host, driver: driver)
            } else {
                return
            }
        }
    }
}

/// Prints every counter, one `name value` per line, to standard error.
func printCounters(host: NetworkHost, driver: EthernetDriver?) {
    var lines: [String] = []
    if let driver { lines += driver.counters.snapshot.map { "\($0.0) \($0.1)" } }
    lines += host.counters.all.map { "\($0.counter.name) \($0.value)" }
    printError(lines.joined(separator: "\n") + "\n")
}

/// A failure already explained in one line; printed as `tapstack: error: ...`.
struct CleanFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
