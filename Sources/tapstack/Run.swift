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

    @Option(name: .long, help: ArgumentHelp("Record every frame in and out to this pcap file.", valueName: "file"))
    var pcap: String?

    @Option(name: .long, help: ArgumentHelp("Seconds an incomplete fragmented datagram is kept, 1 to 120.", valueName: "seconds"))
    var reassemblyTimeout: Int = 30

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard (1...120).contains(reassemblyTimeout) else {
            throw ValidationError("--reassembly-timeout must be between 1 and 120 seconds, not \(reassemblyTimeout)")
        }
    }

    func run() throws {
        let logger = makeLogger(level: logging.logLevel)
        let signals = SignalWaiter()
        let session = try StackSession(options: link, pcap: pcap, logger: logger) { configuration in
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

        while true {
            let signal = signals.next()
            if signal == SIGUSR1 { session.printCounters(); continue }
            if signal == SIGINT || signal == SIGTERM { break }
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
