import ArgumentParser
import CTapstackChannel
import FoundationEssentials
import SocketService

/// `tapstack stats`: every counter of a running stack.
struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every counter of a running stack.",
        discussion: """
        Asks the stack through its socket service (no signal). One 'name value' \
        per line by default; --json gives one object; --prometheus gives the \
        Prometheus text format (for node_exporter's textfile collector, or a \
        scrape through any HTTP wrapper), each counter as \
        tapstack_NAME_total{interface="..."}.
        """
    )

    @Flag(name: .long, help: "One JSON object: counter name to value.")
    var json = false

    @Flag(name: .long, help: "Prometheus text exposition format.")
    var prometheus = false

    @OptionGroup var location: ServiceLocation

    func validate() throws {
        if json && prometheus { throw ValidationError("--json and --prometheus exclude each other") }
    }

    func run() throws {
        let answer = try queryService(at: location.path, TSP_QUERY_COUNTERS)
        let counters: [String: UInt64]
        do { counters = try JSONDecoder().decode([String: UInt64].self, from: Data(answer)) } catch {
            throw CleanFailure("the stack at \(location.path) answered something that is not a counter list: \(error)")
        }
        if json {
            printOut(String(decoding: answer, as: UTF8.self) + "\n")
        } else if prometheus {
            printOut(PrometheusExposition.render(counters, labels: ["interface": location.interface]))
        } else {
            printOut(counters.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)\n" }.joined())
        }
    }
}
