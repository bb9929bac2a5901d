import ArgumentParser
import Glibc
import Link
import Logging
import Sockets
import Stack
import Wire

/// `tapstack recv PORT`: print each UDP datagram's payload as a line, built
/// only on the socket shim.
struct Recv: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the payload of each UDP datagram received on PORT as a line.",
        discussion: """
        Brings the stack up on the TAP device (as 'tapstack run' does, without \
        the echo service) and prints every datagram to PORT on standard output \
        until SIGINT or SIGTERM, or until --count datagrams have arrived.
        """
    )

    @Argument(help: ArgumentHelp("UDP port to receive on.", valueName: "port"))
    var port: UInt16

    @Option(name: .long, help: "Exit after this many datagrams (0: never).")
    var count: Int = 0

    @Flag(name: .long, help: "Prefix each line with the sender's address and port.")
    var showSource = false

    @OptionGroup var link: InterfaceOptions
    @OptionGroup var capture: CaptureOptions
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard port != 0 else { throw ValidationError("port must be 1 to 65535") }
        guard count >= 0 else { throw ValidationError("--count must not be negative") }
    }

    func run() throws {
        let logger = makeLogger(level: logging.logLevel)
        let signals = SignalWaiter()
        let session = try StackSession(options: link, capture: capture, logger: logger)
        let socket = UDPSocket(host: session.host)
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
                var line = String(decoding: datagram.payload, as: UTF8.self)
                if !line.hasSuffix("\n") { line += "\n" }
                printOut(showSource ? "\(datagram.source) \(line)" : line)
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
}
