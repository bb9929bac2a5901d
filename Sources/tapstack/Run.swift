import ArgumentParser
import Glibc
import Logging
import Sockets
import Stack

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

    @OptionGroup var capture: CaptureOptions

    @Option(name: .long, help: ArgumentHelp("Print the counters that changed every this many seconds (0: never).", valueName: "seconds"))
    var statsInterval: Int = 0

    @Option(name: .long, help: ArgumentHelp("Seconds an incomplete fragmented datagram is kept, 1 to 120.", valueName: "seconds"))
    var reassemblyTimeout: Int = 30

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard statsInterval >= 0 else { throw ValidationError("--stats-interval must not be negative") }
        guard (1...120).contains(reassemblyTimeout) else {
            throw ValidationError("--reassembly-timeout must be between 1 and 120 seconds, not \(reassemblyTimeout)")
        }
    }

    func run() throws {
        let logger = makeLogger(level: logging.logLevel)
        let signals = SignalWaiter()
        let session = try StackSession(options: link, capture: capture, logger: logger) { configuration in
            configuration.reassemblyTimeout = .seconds(Double(reassemblyTimeout))
        }

        var echo: EchoService?
        if echoPort != 0 {
            do { echo = try EchoService(host: session.host, port: echoPort, logger: logger) } catch {
                session.stop()
                throw CleanFailure("cannot bind the echo service to UDP port \(echoPort): \(error)")
            }
        }
        let device = session.device
        logger.info("tapstack up on \(device.name)\(device.isPersistent ? " (persistent)" : ""): \(link.address) \(link.mac)\(echo != nil ? ", UDP echo on port \(echoPort)" : "")")

        var previous = session.counterValues()
        while true {
            let signal = signals.next(timeoutSeconds: statsInterval)
            if signal == SIGUSR1 { session.printCounters(); continue }
            if signal == SIGINT || signal == SIGTERM { break }
            if signal == nil {
                // --stats-interval: the counters that moved since the last report.
                let current = session.counterValues()
                let changed = zip(previous, current).filter { $0.value != $1.value }.map { "\($1.name) \($1.value) (+\($1.value &- $0.value))" }
                if !changed.isEmpty { printError("stats:\n" + changed.joined(separator: "\n") + "\n") }
                previous = current
            }
        }

        logger.info("stopping")
        echo?.stop()
        session.stop()
        session.printCounters()
    }
}

/// A failure already explained in one line; printed as `tapstack: error: ...`.
struct CleanFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
