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

    @OptionGroup var service: ServiceOptions

    @OptionGroup var capture: CaptureOptions

    @Option(name: .long, help: ArgumentHelp("Print the counters that changed every this many seconds (0: never).", valueName: "seconds"))
    var statsInterval: Int = 0

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard statsInterval >= 0 else { throw ValidationError("--stats-interval must not be negative") }
    }

    func run() throws {
        let logger = makeLogger(level: logging.logLevel)
        let signals = SignalWaiter()
        let session = try StackSession(options: link, capture: capture, logger: logger) { service.apply(to: &$0) }

        var echo: EchoService?
        if service.echoPort != 0 {
            do { echo = try EchoService(host: session.host, port: service.echoPort, logger: logger) } catch {
                session.stop()
                throw CleanFailure("cannot bind the echo service to UDP port \(service.echoPort): \(error)")
            }
        }
        let device = session.device
        logger.info("tapstack up on \(device.name)\(device.isPersistent ? " (persistent)" : ""): \(link.address) \(link.mac)\(echo != nil ? ", UDP echo on port \(service.echoPort)" : "")")

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
