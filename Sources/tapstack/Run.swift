import ArgumentParser
import Glibc
import Logging
import SocketService
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

        Other processes use the stack's UDP sockets through the socket service \
        (--socket), for example with 'tapstack exec -- nc -u 192.0.2.1 9000'.
        """
    )

    @OptionGroup var link: InterfaceOptions

    @OptionGroup var service: ServiceOptions

    @OptionGroup var capture: CaptureOptions

    @Option(name: .long, help: ArgumentHelp("Serve the stack's sockets to other processes (tapstack exec, TapstackClient) on this Unix socket, mode 0660. (default: /run/tapstack/INTERFACE.sock; when the default cannot be used the stack runs without it)", valueName: "path"))
    var socket: String?

    @Flag(name: .long, help: "Do not serve sockets to other processes.")
    var noSocket = false

    @Option(name: .long, help: ArgumentHelp("Print the counters that changed every this many seconds (0: never).", valueName: "seconds"))
    var statsInterval: Int = 0

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard statsInterval >= 0 else { throw ValidationError("--stats-interval must not be negative") }
        if noSocket && socket != nil { throw ValidationError("--socket and --no-socket exclude each other") }
        if let socket, socket.isEmpty || socket.utf8.count > 107 {
            throw ValidationError("--socket must be a path of 1 to 107 bytes")
        }
    }

    /// Starts the socket service; a failure at an explicit path is an error,
    /// at the default path only a notice (an unprivileged user cannot write /run).
    private func startSocketService(_ session: StackSession, logger: Logger) throws -> SocketService? {
        guard !noSocket else { return nil }
        let path = socket ?? "/run/tapstack/\(session.device.name).sock"
        do {
            let counters = SessionCounters(session)
            let service = try SocketService(host: session.host, path: path, interfaceName: session.device.name,
                                            counterSource: { counters.values() })
            service.start()
            logger.info("serving sockets on \(path)")
            return service
        } catch {
            if socket != nil { throw CleanFailure("cannot serve sockets on \(path): \(error)") }
            logger.notice("not serving sockets to other processes: \(path): \(error)")
            return nil
        }
    }

    func run() throws {
        let logger = makeLogger(level: logging.logLevel)
        let signals = SignalWaiter()
        let session = try StackSession(options: link, capture: capture, logger: logger, echoPort: service.echoPort) { service.apply(to: &$0) }

        var echo: EchoService?
        if service.echoPort != 0 {
            do { echo = try EchoService(host: session.host, port: service.echoPort, logger: logger) } catch {
                session.stop()
                throw CleanFailure("cannot bind the echo service to UDP port \(service.echoPort): \(error)")
            }
        }
        let socketService: SocketService?
        do { socketService = try startSocketService(session, logger: logger) } catch {
            echo?.stop()
            session.stop()
            throw error
        }
        func counterValues() -> [(name: String, value: UInt64)] {
            session.counterValues() + (socketService?.counters.snapshot.map { (name: $0.0, value: $0.1) } ?? [])
        }
        func printCounters() {
            printError(counterValues().map { "\($0.name) \($0.value)" }.joined(separator: "\n") + "\n")
        }
        let device = session.device
        logger.info("tapstack up on \(device.name)\(device.isPersistent ? " (persistent)" : ""): \(link.address) \(link.mac)\(echo != nil ? ", UDP echo on port \(service.echoPort)" : "")")

        var previous = counterValues()
        while true {
            let signal = signals.next(timeoutSeconds: statsInterval)
            if signal == SIGUSR1 { printCounters(); continue }
            if signal == SIGINT || signal == SIGTERM { break }
            if signal == nil {
                // --stats-interval: the counters that moved since the last report.
                let current = counterValues()
                let changed = zip(previous, current).filter { $0.value != $1.value }.map { "\($1.name) \($1.value) (+\($1.value &- $0.value))" }
                if !changed.isEmpty { printError("stats:\n" + changed.joined(separator: "\n") + "\n") }
                previous = current
            }
        }

        logger.info("stopping")
        socketService?.stop()
        echo?.stop()
        session.stop()
        printCounters()
    }
}

/// A failure already explained in one line; printed as `tapstack: error: ...`.
struct CleanFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The session's counters, readable from the service thread for `tapstack
/// stats` (the link's and the capture's are atomics, the device's come from
/// /proc, the stack's are read holding it).
final class SessionCounters: @unchecked Sendable {
    private let session: StackSession
    init(_ session: StackSession) { self.session = session }
    func values() -> [(name: String, value: UInt64)] { session.counterValues() }
}
