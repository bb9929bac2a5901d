import ArgumentParser
import Glibc
import Link
import Logging
import Sockets
import Stack
import Wire

/// `tapstack send HOST PORT`: standard input's lines out as UDP datagrams,
/// like `nc -u HOST PORT`, built only on the socket shim.
struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send each line of standard input as a UDP datagram, like nc -u.",
        discussion: """
        Brings the stack up on the TAP device (as 'tapstack run' does, without \
        the echo service), sends every line (with its newline) to HOST PORT, and \
        exits once standard input ends and every datagram has left, or with \
        status 1 if the destination cannot be reached.
        """
    )

    @Argument(help: ArgumentHelp("Destination IPv4 address.", valueName: "host"),
              transform: { text in
                  guard let address = IPv4Address(text) else { throw ValidationError("'\(text)' is not an IPv4 address") }
                  return address
              })
    var host: IPv4Address

    @Argument(help: ArgumentHelp("Destination UDP port.", valueName: "port"))
    var port: UInt16

    @Option(name: .long, help: "Source UDP port; 0 picks an ephemeral one.")
    var sourcePort: UInt16 = 0

    @OptionGroup var link: InterfaceOptions
    @OptionGroup var capture: CaptureOptions
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard port != 0 else { throw ValidationError("port must be 1 to 65535") }
    }

    func run() throws {
        let logger = makeLogger(level: logging.logLevel)
        let signals = SignalWaiter()
        let session = try StackSession(options: link, capture: capture, logger: logger)
        let socket = UDPSocket(host: session.host)
        do {
            try socket.bind(port: sourcePort)
            try socket.connect(to: SocketAddress(host, port))
        } catch {
            session.stop()
            throw CleanFailure("cannot send to \(host):\(port): \(error)")
        }

        let outcome = SendOutcome()
        let sender = JoinableThread(name: "tapstack-send") {
            defer { SignalWaiter.finish() }
            while let line = readLine(strippingNewline: false) {
                do throws(SocketError) {
                    try socket.send(Array(line.utf8), timeout: nil)
                    outcome.sent += 1
                } catch {
                    outcome.error = error
                    return
                }
            }
        }
        var interrupted = false
        while true {
            let signal = signals.next()
            if signal == SIGUSR1 { session.printCounters(); continue }
            interrupted = signal != SignalWaiter.done
            break
        }
        if interrupted {
            // The sender may be blocked reading stdin: leave it; the process exits.
            session.stop()
            return
        }
        sender.join()
        // Wait for ARP and the driver; an unreachable neighbour fails after its retries.
        _ = session.waitUntilDrained(timeout: .seconds(5))
        session.stop()
        if let error = outcome.error ?? socket.takeError() {
            throw CleanFailure("sending to \(host):\(port) failed: \(error)")
        }
        logger.info("sent \(outcome.sent) datagrams to \(host):\(port)")
    }
}

/// What the sender thread did; read by the main thread after joining it.
final class SendOutcome: @unchecked Sendable {
    // Written only by the sender thread, read only after `join` (which orders them).
    var sent = 0
    var error: SocketError?
}
