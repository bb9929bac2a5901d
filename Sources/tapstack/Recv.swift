import ArgumentParser
import Glibc
import Link
import Logging
import Sockets
import Stack
import TapstackClient
import Wire

/// `tapstack recv PORT`: print each UDP datagram's payload as a line, built
/// only on the socket shim.
struct Recv: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the payload of each UDP datagram received on PORT as a line.",
        discussion: """
        Receives through the stack already running on the interface (its socket \
        service, --socket), or, when none serves it, brings a stack up on the \
        TAP device (as 'tapstack run' does, without the echo service). Prints \
        every datagram to PORT on standard output until SIGINT or SIGTERM, or \
        until --count datagrams have arrived.
        """
    )

    @Argument(help: ArgumentHelp("UDP port to receive on.", valueName: "port"))
    var port: UInt16

    @Option(name: .long, help: "Exit after this many datagrams (0: never).")
    var count: Int = 0

    @Flag(name: .long, help: "Prefix each line with the sender's address and port.")
    var showSource = false

    @Option(name: .long, help: ArgumentHelp("The running stack's socket service to receive through; with it, never a stack of its own. (default: $TAPSTACK_SOCKET, else /run/tapstack/INTERFACE.sock if a stack serves it, else a stack of its own)", valueName: "path"))
    var socket: String?

    @OptionGroup var link: InterfaceOptions
    @OptionGroup var capture: CaptureOptions
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard port != 0 else { throw ValidationError("port must be 1 to 65535") }
        guard count >= 0 else { throw ValidationError("--count must not be negative") }
    }

    func run() throws {
        let logger = makeLogger(level: logging.logLevel)
        let chosen = socket ?? environmentServicePath
        let path = chosen ?? defaultServicePath(interface: link.interface)
        // Dual-stack: datagrams of either family reach the port.
        if let remote = try connectToRunningStack(at: path, explicit: chosen != nil, capture: capture, family: .ipv6) {
            defer { remote.close() }
            do throws(SocketError) { try remote.bind(port: port) } catch {
                throw CleanFailure("cannot bind UDP port \(port) on the stack at \(path): \(error)")
            }
            logger.info("receiving on port \(port) through the stack serving \(path)")
            var received = 0
            while count == 0 || received < count {
                guard let datagram = try? remote.receive(timeout: nil) else { break }
                received += 1
                printOut(line(for: datagram))
            }
            return
        }
        let signals = SignalWaiter()
        let session = try StackSession(options: link, capture: capture, logger: logger, noServiceAt: path)
        let socket = UDPSocket(host: session.host, family: .ipv6)
        do { try socket.bind(port: port) } catch {
            session.stop()
            throw CleanFailure("cannot bind UDP port \(port): \(error)")
        }
        logger.info("receiving on \(link.address.address):\(port)")
        let limit = count
        let showSource = showSource
        let receiver = JoinableThread(name: "tapstack-recv") {
            var received = 0
            while limit == 0 || received < limit {
                guard let datagram = try? socket.receive(timeout: nil) else { break }
                received += 1
                printOut(Recv.line(for: datagram, showSource: showSource))
            }
            SignalWaiter.finish()
        }
        while true {
            let signal = signals.next()
            if signal == SIGUSR1 { session.printCounters(); continue }
            break
        }
        socket.close()  // wakes the receiver if it still waits
        receiver.join()
        session.stop()
    }

    private func line(for datagram: Datagram) -> String { Recv.line(for: datagram, showSource: showSource) }

    /// A datagram's payload as one line, with its source first if asked.
    static func line(for datagram: Datagram, showSource: Bool) -> String {
        var line = String(decoding: datagram.payload, as: UTF8.self)
        if !line.hasSuffix("\n") { line += "\n" }
        return showSource ? "\(datagram.source) \(line)" : line
    }
}
