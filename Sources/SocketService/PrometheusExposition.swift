/// Counters in the Prometheus text exposition format (version 0.0.4): what
/// node_exporter's textfile collector reads and a scrape expects.
public enum PrometheusExposition {
    /// `udp.rx_datagrams` becomes `tapstack_udp_rx_datagrams_total`: the
    /// characters a metric name may not hold become `_`, and a counter ends in `_total`.
    public static func metricName(for counter: String) -> String {
        let body = String(counter.unicodeScalars.map { scalar -> Character in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "_": Character(scalar)
            default: "_"
            }
        })
        return "tapstack_\(body)_total"
    }

    /// A label value with `\`, `"` and newlines escaped.
    public static func escape(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// Every counter as a `# HELP`, a `# TYPE ... counter` and a sample line,
    /// sorted by name, each sample carrying `labels`.
    public static func render(_ counters: [String: UInt64], labels: [String: String] = [:]) -> String {
        let labelText = labels.isEmpty ? "" : "{" + labels.sorted { $0.key < $1.key }
            .map { "\($0.key)=\"\(escape($0.value))\"" }.joined(separator: ",") + "}"
        var text = ""
        for (counter, value) in counters.sorted(by: { $0.key < $1.key }) {
            let name = metricName(for: counter)
            text += "# HELP \(name) tapstack counter \(counter).\n"
            text += "# TYPE \(name) counter\n"
            text += "\(name)\(labelText) \(value)\n"
        }
        return text
    }
}
