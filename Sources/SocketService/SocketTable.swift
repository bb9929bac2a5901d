/// `tapstack ss`'s table: one line per socket, columns aligned, as `ss -uap` prints.
public enum SocketTable {
    public static let header = ["State", "Recv-Q", "Bytes", "Rcvbuf", "Local Address:Port", "Peer Address:Port",
                                "Rx", "Drops", "Tx", "Options", "Process"]

    /// As `ss` shows it: `*` for a dual-stack socket bound to any address,
    /// an IPv6 address in brackets.
    static func localColumn(_ record: SocketRecord) -> String {
        if record.family == "ipv6" && record.localAddress == "::" && !record.options.contains("v6only") { return "*" }
        return bracketed(record.localAddress)
    }

    static func bracketed(_ address: String) -> String { address.contains(":") ? "[\(address)]" : address }

    /// The table with its header; every line ends with a newline.
    public static func render(_ records: [SocketRecord]) -> String {
        let rows = [header] + records.map { record in
            [record.remoteAddress == nil ? "UNCONN" : "ESTAB",
             "\(record.queuedDatagrams)", "\(record.queuedBytes)", "\(record.receiveBufferBytes)",
             "\(localColumn(record)):\(record.localPort)",
             record.remoteAddress.map { "\(bracketed($0)):\(record.remotePort ?? 0)" } ?? "*:*",
             "\(record.receivedDatagrams)", "\(record.droppedDatagrams)", "\(record.sentDatagrams)",
             record.options.isEmpty ? "-" : record.options.joined(separator: ","),
             "\(record.owner.kind):((\"\(record.owner.command)\",pid=\(record.owner.pid),uid=\(record.owner.uid)))"]
        }
        var widths = [Int](repeating: 0, count: header.count)
        for row in rows { for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) } }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[column] - cell.count + 2)
            }.joined()
        }.joined(separator: "\n") + "\n"
    }
}
