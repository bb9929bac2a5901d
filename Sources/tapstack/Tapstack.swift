import ArgumentParser
import Glibc
import SocketAPI

/// The `tapstack` command: a userspace UDP/IPv4 stack on a TAP device.
struct Tapstack: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tapstack",
        abstract: "A userspace UDP/IPv4 network stack on a Linux TAP device.",
        version: TapstackVersion.current,
        subcommands: [Run.self, Exec.self, Send.self, Recv.self, Ss.self, Stats.self, Replay.self]
    )
}

@main
enum Main {
    /// Parses and runs, turning every failure into one `tapstack: error:` line.
    static func main() {
        // A capture streamed to a reader that quits must not kill the stack:
        // the failed write is counted instead (capture.drop_write_error).
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try Tapstack.parseAsRoot()
            try command.run()
            if captureAbandoned { _exit(0) }
        } catch {
            let code = Tapstack.exitCode(for: error)
            if code == .success || error is CleanExit { Tapstack.exit(withError: error) }
            let message = Tapstack.message(for: error)
                .split(separator: "\n").first.map(String.init) ?? "\(error)"
            printError("tapstack: error: \(message)\n")
            exit(code == .validationFailure ? 64 : max(code.rawValue, 1))
        }
    }
}
