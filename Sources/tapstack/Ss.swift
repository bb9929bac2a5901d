import ArgumentParser
import CTapstackChannel
import FoundationEssentials
import SocketService

/// `tapstack ss`: the sockets of a running stack, like `ss -uan`.
struct Ss: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ss",
        abstract: "List the UDP sockets of a running stack, like ss -uap.",
        discussion: """
        Asks the stack through its socket service (no signal, nothing stops). \
        Each bound socket: state (UNCONN, or ESTAB when connected), datagrams \
        and bytes queued, receive buffer, datagrams received, dropped (queue \
        full) and sent, options, and who holds it: the stack's own process \
        (in-process, e.g. its echo service) or a client with its pid.
        """
    )

    @Flag(name: .shortAndLong, help: "Only sockets without a peer (what a server listens on).")
    var listening = false

    @Flag(name: .long, help: "Print the answer as JSON (snake_case keys).")
    var json = false

    @OptionGroup var location: ServiceLocation

    func run() throws {
        let answer = try queryService(at: location.path, TSP_QUERY_SOCKETS)
        var records: [SocketRecord]
        do { records = try IntrospectionFormat.decoder().decode([SocketRecord].self, from: Data(answer)) } catch {
            throw CleanFailure("the stack at \(location.path) answered something that is not a socket list: \(error)")
        }
        if listening { records = records.filter { $0.remoteAddress == nil } }
        if json {
            printOut(String(decoding: try IntrospectionFormat.encoder().encode(records), as: UTF8.self) + "\n")
        } else {
            printOut(SocketTable.render(records))
        }
    }
}
