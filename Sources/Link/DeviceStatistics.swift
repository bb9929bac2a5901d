import Glibc

/// The kernel's own counters for a network device, as `ip -s link` shows
/// them. On a TAP device the kernel's "transmit" is toward the stack: its
/// `txDropped` counts frames the kernel dropped because the stack's queue
/// on the device was full, drops no counter of the stack can see.
public struct DeviceStatistics: Equatable, Sendable {
    /// Frames the stack wrote that the kernel took.
    public var rxPackets: UInt64 = 0
    /// Frames the stack wrote that the kernel dropped.
    public var rxDropped: UInt64 = 0
    /// Frames the stack wrote that the kernel found in error.
    public var rxErrors: UInt64 = 0
    /// Frames the kernel queued toward the stack.
    public var txPackets: UInt64 = 0
    /// Frames toward the stack the kernel dropped (the device's queue was full).
    public var txDropped: UInt64 = 0
    /// Frames toward the stack that failed in the kernel.
    public var txErrors: UInt64 = 0

    public init() {}

    /// Reads the statistics of `interface` in the calling thread's network
    /// namespace (`/proc/self/net/dev`); nil when it has no such device.
    public static func read(interface: String) -> DeviceStatistics? {
        guard let file = fopen("/proc/self/net/dev", "r") else { return nil }
        defer { fclose(file) }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            text += chunk[0..<n]
        }
        return parse(procNetDev: String(decoding: text, as: UTF8.self), interface: interface)
    }

    /// Parses `/proc/net/dev` for `interface`: after "name:", receive
    /// bytes, packets, errs, drop, fifo, frame, compressed, multicast, then
    /// transmit bytes, packets, errs, drop, ...
    public static func parse(procNetDev text: String, interface: String) -> DeviceStatistics? {
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":"),
                  line[..<colon].trimmingCharacters() == interface else { continue }
            let fields = line[line.index(after: colon)...].split(separator: " ").compactMap { UInt64($0) }
            guard fields.count >= 12 else { return nil }
            var statistics = DeviceStatistics()
            statistics.rxPackets = fields[1]
            statistics.rxErrors = fields[2]
            statistics.rxDropped = fields[3]
            statistics.txPackets = fields[9]
            statistics.txErrors = fields[10]
            statistics.txDropped = fields[11]
            return statistics
        }
        return nil
    }

    /// What was counted since `earlier` (counters only grow; a device that
    /// was recreated meanwhile counts from zero).
    public func since(_ earlier: DeviceStatistics) -> DeviceStatistics {
        func delta(_ now: UInt64, _ then: UInt64) -> UInt64 { now >= then ? now - then : now }
        var result = DeviceStatistics()
        result.rxPackets = delta(rxPackets, earlier.rxPackets)
        result.rxDropped = delta(rxDropped, earlier.rxDropped)
        result.rxErrors = delta(rxErrors, earlier.rxErrors)
        result.txPackets = delta(txPackets, earlier.txPackets)
        result.txDropped = delta(txDropped, earlier.txDropped)
        result.txErrors = delta(txErrors, earlier.txErrors)
        return result
    }

    /// Name and value of each counter (`device.` and the kernel's names), in a stable order.
    public var snapshot: [(String, UInt64)] {
        [("device.rx_packets", rxPackets), ("device.rx_dropped", rxDropped), ("device.rx_errors", rxErrors),
         ("device.tx_packets", txPackets), ("device.tx_dropped", txDropped), ("device.tx_errors", txErrors)]
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> Substring {
        var result = self
        while result.first == " " || result.first == "\t" { result = result.dropFirst() }
        while result.last == " " || result.last == "\t" { result = result.dropLast() }
        return result
    }
}
