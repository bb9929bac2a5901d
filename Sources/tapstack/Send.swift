import ArgumentParser
import Glibc
import Link
import Logging
import Sockets
import Stack
import TapstackClient
import Wire

/// `tapstack send HOST PORT`: standard input's lines out as UDP datagrams,
/// like `nc -u HOST PORT`, built only on the socket shim.
struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send each line of standard input as a UDP datagram, like nc -u.",
        discussion: """
        Sends every line (with its newline) to HOST PORT through the stack \
        already running on the interface (its socket service, --socket), or, \
        when none serves it, brings a stack up on the TAP device (as 'tapstack \
        run' does, without the echo service). Exits once standard input ends and \
        every datagram has left, or with status 1 if the destination cannot be \
        reached.
        """
    )

    @Argument(help: ArgumentHelp("Destination IPv4 or IPv6 address.", valueName: "host"),
              transform: { text in
                  if let address = IPv4Address(text) { return SocketAddress(address, 0) }
                  // A link-local address may name its interface (fe80::1%tap0): the stack has one.
                  let bare = text.split(separator: "%", maxSplits: 1).first.map(String.init) ?? text
                  guard let address = IPv6Address(bare) else { throw ValidationError("'\(text)' is not an IPv4 or IPv6 address") }
                  return SocketAddress(address, 0)
              })
    var host: SocketAddress

    @Argument(help: ArgumentHelp("Destination UDP port.", valueName: "port"))
    var port: UInt16

    @Option(name: .long, help: "Source UDP port; 0 picks an ephemeral one.")
    var sourcePort: UInt16 = 0

    @Option(name: .long, help: ArgumentHelp("The running stack's socket service to send through; with it, never a stack of its own. (default: $TAPSTACK_SOCKET, else /run/tapstack/INTERFACE.sock if a stack serves it, else a stack of its own)", valueName: "path"))
    var socket: String?

    @OptionGroup var link: InterfaceOptions
    @OptionGroup var capture: CaptureOptions
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard port != 0 else { throw ValidationError("port must be 1 to 65535") }
    }

    func run() throws {
        let logger = makeLogger(level: logging.logLevel)
        let chosen = socket ?? environmentServicePath
        let path = chosen ?? defaultServicePath(interface: link.interface)
        let family: AddressFamily = host.isIPv6 ? .ipv6 : .ipv4
        if let remote = try connectToRunningStack(at: path, explicit: chosen != nil, capture: capture, family: family) {
            try send(through: remote, path: path, logger: logger)
            return
        }
        let signals = SignalWaiter()
        let session = try StackSession(options: link, capture: capture, logger: logger, noServiceAt: path)
        let socket = UDPSocket(host: session.host, family: family)
        do {
            try socket.bind(port: sourcePort)
            try socket.connect(to: destination)
        } catch {
            session.stop()
            throw CleanFailure("cannot send to \(destination): \(error)")
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
            throw CleanFailure("sending to \(destination) failed: \(error)")
        }
        logger.info("sent \(outcome.sent) datagrams to \(destination)")
    }

    /// HOST and PORT as one socket address.
    var destination: SocketAddress {
        var address = host
        address.port = port
        return address
    }
}

extension Send {
    /// Sends standard input's lines through a running stack's socket service.
    private func send(through remote: TapstackClient.UDPSocket, path: String, logger: Logger) throws {
        defer { remote.close() }
        var sent = 0
        do throws(SocketError) {
            try remote.bind(port: sourcePort)
            try remote.connect(to: destination)
            while let line = readLine(strippingNewline: false) {
                try remote.send(Array(line.utf8), timeout: nil)
                sent += 1
            }
        } catch {
            throw CleanFailure("sending to \(destination) through the stack at \(path) failed: \(error)")
        }
        // The service takes what is still in the channel even after we exit;
        // waiting lets an error it reports reach us.
        guard remote.waitUntilSent(timeout: .seconds(5)) else {
            throw CleanFailure("the stack at \(path) did not take the last datagrams within 5 s")
        }
        if let error = remote.takeError() { throw CleanFailure("sending to \(destination) failed: \(error)") }
        logger.info("sent \(sent) datagrams to \(destination) through the stack serving \(path)")
    }
}

/// A socket on the stack serving `path`, or nil when none serves it (and no
/// path was named: then the caller brings up a stack of its own).
/// - Throws: `CleanFailure` when a named service is missing, refuses us, or
///   capture options were given (a running stack captures with its own --pcap).
func connectToRunningStack(at path: String, explicit: Bool, capture: CaptureOptions,
                           family: AddressFamily) throws -> TapstackClient.UDPSocket? {
    let remote: TapstackClient.UDPSocket
    do throws(SocketError) {
        remote = try TapstackClient.UDPSocket(servicePath: path, family: family)
    } catch .serviceUnavailable {
        if explicit { throw CleanFailure("no tapstack serves \(path) (start one with 'tapstack run --socket \(path)')") }
        return nil
    } catch {
        throw CleanFailure("cannot use the stack serving \(path): \(error)")
    }
    if capture.pcap != nil {
        remote.close()
        throw CleanFailure("--pcap applies to a stack of this command's own, and a stack already serves \(path): capture there with 'tapstack run --pcap', or pass --socket to another path")
    }
    return remote
}

/// What the sender thread did; read by the main thread after joining it.
final class SendOutcome: @unchecked Sendable {
    // Written only by the sender thread, read only after `join` (which orders them).
    var sent = 0
    var error: SocketError?
}
