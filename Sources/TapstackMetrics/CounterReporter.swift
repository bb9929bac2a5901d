import CoreMetrics
import Sockets

/// Reports a stack's counters to swift-metrics, so that an application
/// embedding the stack sees them in whatever metrics backend it bootstrapped
/// (Prometheus, StatsD, OpenTelemetry...).
///
/// The stack counts in plain integers on its hot path; this reads them and
/// adds what each grew since the last report to a `CoreMetrics.Counter`
/// labelled `tapstack_<layer>_<name>` (dots become underscores) with the
/// dimensions given. Call `report()` whenever suits (e.g. before a scrape),
/// or `start(every:)` to report on a thread of its own.
public final class CounterReporter: Sendable {
    /// Where the counters come from: name and running total.
    private let source: @Sendable () -> [(name: String, value: UInt64)]
    private let dimensions: [(String, String)]
    private let factory: any MetricsFactory
    private let state = Locked<State>(State())
    private let stopSignal = Event()
    private let thread = Locked<JoinableThread?>(nil)

    private struct State {
        var reported: [String: UInt64] = [:]
        var counters: [String: Counter] = [:]
    }

    /// Reports the counters of `host`'s stack.
    public convenience init(host: NetworkHost, dimensions: [(String, String)] = [],
                            factory: any MetricsFactory = MetricsSystem.factory) {
        self.init(dimensions: dimensions, factory: factory) { host.counters.all.map { (name: $0.counter.name, value: $0.value) } }
    }

    /// Reports the counters `source` returns (e.g. the stack's plus a link's)
    /// to `factory` (by default the one the application bootstrapped).
    public init(dimensions: [(String, String)] = [], factory: any MetricsFactory = MetricsSystem.factory,
                source: @escaping @Sendable () -> [(name: String, value: UInt64)]) {
        self.source = source
        self.dimensions = dimensions
        self.factory = factory
    }

    /// The swift-metrics label of a counter: `udp.rx_datagrams` becomes `tapstack_udp_rx_datagrams`.
    public static func label(for counter: String) -> String {
        "tapstack_" + String(counter.map { $0 == "." || $0 == "-" ? "_" : $0 })
    }

    /// Adds to each metrics counter what its stack counter grew since the last report.
    public func report() {
        let values = source()
        state.withLock { state in
            for (name, value) in values {
                let previous = state.reported[name] ?? 0
                guard value > previous || state.counters[name] == nil else { continue }
                let counter = state.counters[name] ?? Counter(label: Self.label(for: name), dimensions: dimensions, factory: factory)
                state.counters[name] = counter
                if value > previous { counter.increment(by: Int64(clamping: value - previous)) }
                state.reported[name] = value
            }
        }
    }

    /// Reports every `interval` on a thread of its own until `stop()`.
    public func start(every interval: Duration) {
        let milliseconds = Int32(clamping: interval.components.seconds * 1000 + interval.components.attoseconds / 1_000_000_000_000_000)
        thread.withLock { thread in
            precondition(thread == nil, "already started")
            thread = JoinableThread(name: "tapstack-metrics") { [self] in
                while !stopSignal.wait(timeoutMilliseconds: max(milliseconds, 1)) { report() }
                report()
            }
        }
    }

    /// Stops the reporting thread after a last report.
    public func stop() {
        stopSignal.signal()
        thread.withLock { $0 }?.join()
    }
}
