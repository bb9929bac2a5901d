import ArgumentParser
import Glibc
import Host
import Link
import Stack
import Wire

/// Options that name the stack's identity on the link, shared by every
/// subcommand that brings the stack up.
struct InterfaceOptions: ParsableArguments {
    @Option(name: .long, help: "TAP (or, with --mode tun, TUN) device to create or attach to.")
    var interface: String = "tap0"

    @Option(name: .long, help: ArgumentHelp("tap (Ethernet frames; the stack answers ARP) or tun (IPv4 packets without a link header, as VPNs use: no ARP, plain read() and write(), no offloads; captures are raw IP).", valueName: "tap|tun"))
    var mode: DeviceMode = .tap

    @Option(name: .long, help: ArgumentHelp("The stack's IPv4 address and prefix length. (default: 192.0.2.2/24)", valueName: "a.b.c.d/len"),
            transform: parseInterfaceAddress)
    var address: IPv4Interface = IPv4Interface("192.0.2.2/24")!

    @Option(name: .long, help: ArgumentHelp("The stack's Ethernet address. (default: 02:00:00:00:00:02)", valueName: "aa:bb:cc:dd:ee:ff"),
            transform: parseStackMAC)
    var mac: MACAddress = MACAddress("02:00:00:00:00:02")!

    @Option(name: .long, help: ArgumentHelp("Default gateway for destinations off the subnet (none by default).", valueName: "a.b.c.d"),
            transform: parseGateway)
    var gateway: IPv4Address?

    @Option(name: .long, help: ArgumentHelp("An IPv6 address of the stack beside its link-local one (repeatable), checked unique on the link before use; 'auto' takes addresses from routers' advertisements (SLAAC).", valueName: "x:x::x[/len]|auto"),
            transform: parseIPv6Option)
    var address6: [IPv6AddressOption] = []

    @Option(name: .long, help: "IP MTU of the link, 576 to 1500.")
    var mtu: Int = 1500

    @Option(name: .long, help: ArgumentHelp("How the link moves frames: io_uring (a multishot read fills the receive FIFO, one system call per turn for all writes and reads; falls back to syscalls when the kernel refuses it) or syscalls (one read() or write() per frame).", valueName: "io_uring|syscalls"))
    var linkIO: LinkIOMode = .ioUring

    @Option(name: .long, help: ArgumentHelp("Offloads with the kernel through a virtio-net header: on (checksums and UDP segmentation, as far as the kernel grants them), checksum (checksums only), or off (plain frames, every checksum computed, one datagram per write).", valueName: "on|checksum|off"))
    var offload: TapOffloadRequest = .all

    @Option(name: .long, help: ArgumentHelp("After traffic, keep polling the link this many microseconds before sleeping (0, the default: sleep at once), or 'auto': poll for a window that follows the traffic's gaps, at most two wake-ups as measured on this host. Saves a wake-up per frame of a conversation where waking is slow, at the price of the CPU it polls with.", valueName: "microseconds|auto"),
            transform: parseBusyPoll)
    var busyPoll: IdlePolicy = .sleep

    @Option(name: .long, help: ArgumentHelp("Run the executor thread on these CPUs only, e.g. 1 or 0,2-3.", valueName: "list"),
            transform: { text in
                guard let cpus = parseCPUList(text) else { throw ValidationError("'\(text)' is not a CPU list, like 1 or 0,2-3") }
                return cpus
            })
    var cpu: [Int] = []

    func validate() throws {
        let available = Int(sysconf(Int32(_SC_NPROCESSORS_CONF)))
        if let bad = cpu.first(where: { $0 >= available }) {
            throw ValidationError("--cpu \(bad): this machine has CPUs 0 to \(available - 1)")
        }
        guard (576...1500).contains(mtu) else { throw ValidationError("--mtu must be between 576 and 1500, not \(mtu)") }
        if let gateway, !address.contains(gateway) {
            throw ValidationError("gateway \(gateway) is not on the subnet \(address)")
        }
        let host = address.address
        guard !host.isUnspecified, !host.isMulticast, !host.isLimitedBroadcast, !host.isLoopback,
              address.prefixLength >= 31 || (host != address.network && host != address.subnetBroadcast) else {
            throw ValidationError("\(address) is not a usable host address")
        }
    }

    var executorOptions: ExecutorOptions {
        ExecutorOptions(idlePolicy: busyPoll, cpus: cpu)
    }

    /// How the executor waits, for the start-up line; `limit`: the adaptive
    /// window's bound the executor measured (ns).
    func executorDescription(adaptiveLimit limit: UInt64 = 0) -> String {
        let waiting = switch busyPoll {
        case .sleep: "sleeps when idle"
        case .poll(let nanoseconds): "busy-polls \(nanoseconds / 1000) us"
        case .adaptive: "busy-polls adaptively, at most \(limit / 1000) us (two wake-ups, as measured here)"
        }
        return waiting + (cpu.isEmpty ? "" : ", CPUs \(cpu)")
    }

    var stackConfiguration: StackConfiguration {
        var configuration = StackConfiguration(mac: mac, interface: address, gateway: gateway)
        configuration.mtu = mtu
        configuration.resolvesLinkAddresses = mode == .tap
        configuration.ipv6Addresses = address6.compactMap { if case .address(let address) = $0 { address } else { nil } }
        configuration.ipv6Autoconfiguration = address6.contains(.automatic)
        configuration.duplicateAddressDetectionTransmits = 1
        configuration.reportsMulticastListening = true
        return configuration
    }
}

/// What the stack serves and how long it waits, shared by `run` and `replay`
/// (a replay must behave as the run it reproduces).
struct ServiceOptions: ParsableArguments {
    @Option(name: .long, help: "UDP port of the echo service; 0 turns it off.")
    var echoPort: UInt16 = 7

    @Option(name: .long, help: ArgumentHelp("Seconds an incomplete fragmented datagram is kept, 1 to 120.", valueName: "seconds"))
    var reassemblyTimeout: Int = 30

    func validate() throws {
        guard (1...120).contains(reassemblyTimeout) else {
            throw ValidationError("--reassembly-timeout must be between 1 and 120 seconds, not \(reassemblyTimeout)")
        }
    }

    func apply(to configuration: inout StackConfiguration) {
        configuration.reassemblyTimeout = .seconds(Double(reassemblyTimeout))
    }
}

extension LinkIOMode: ExpressibleByArgument {}

/// `--busy-poll`: microseconds (0 to 1 000 000; 0 sleeps at once) or `auto`.
func parseBusyPoll(_ text: String) throws -> IdlePolicy {
    if text == "auto" { return .adaptive }
    guard let microseconds = UInt64(text), microseconds <= 1_000_000 else {
        throw ValidationError("--busy-poll takes microseconds (0 to 1000000) or 'auto', not '\(text)'")
    }
    return microseconds == 0 ? .sleep : .poll(nanoseconds: microseconds * 1000)
}

extension DeviceMode: ExpressibleByArgument {}

extension TapOffloadRequest: ExpressibleByArgument {}

/// Parses a CPU list like `1` or `0,2-3`; nil when malformed.
func parseCPUList(_ text: String) -> [Int]? {
    var cpus: [Int] = []
    for part in text.split(separator: ",", omittingEmptySubsequences: false) {
        let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
        guard (1...2).contains(bounds.count), let low = Int(bounds[0]), let high = Int(bounds[bounds.count - 1]),
              low >= 0, low <= high, high < 4096 else { return nil }
        cpus += Array(low...high)
    }
    return cpus.isEmpty ? nil : Array(Set(cpus)).sorted()
}

/// `--address6`: an address, or `auto` for SLAAC.
enum IPv6AddressOption: Equatable {
    case address(IPv6Address)
    case automatic
}

func parseIPv6Option(_ text: String) throws -> IPv6AddressOption {
    text == "auto" ? .automatic : .address(try parseIPv6Address(text))
}

/// `--address6`: an IPv6 address (a prefix length, if given, is accepted and
/// not used yet: the stack answers only for its own addresses).
func parseIPv6Address(_ text: String) throws -> IPv6Address {
    let address = text.split(separator: "/", maxSplits: 1).first.map(String.init) ?? text
    var raw = in6_addr()
    guard inet_pton(AF_INET6, address, &raw) == 1 else {
        throw ValidationError("'\(text)' is not an IPv6 address, like 2001:db8::2/64")
    }
    let parsed = withUnsafeBytes(of: &raw) { IPv6Address(reading: $0, at: 0) }
    guard !parsed.isMulticast, !parsed.isUnspecified else { throw ValidationError("'\(text)' is not a usable host address") }
    return parsed
}

/// `--address`: the stack's IPv4 address with its prefix length.
func parseInterfaceAddress(_ text: String) throws -> IPv4Interface {
    guard let value = IPv4Interface(text) else {
        throw ValidationError("'\(text)' is not an IPv4 address with prefix length, like 192.0.2.2/24")
    }
    return value
}

/// `--mac`: the stack's Ethernet address, unicast.
func parseStackMAC(_ text: String) throws -> MACAddress {
    guard let value = MACAddress(text) else {
        throw ValidationError("'\(text)' is not a MAC address, like 02:00:00:00:00:02")
    }
    guard !value.isMulticast, value != .zero else {
        throw ValidationError("'\(text)' is not a unicast MAC address")
    }
    return value
}

/// `--gateway`: an IPv4 address.
func parseGateway(_ text: String) throws -> IPv4Address {
    guard let value = IPv4Address(text) else {
        throw ValidationError("'\(text)' is not an IPv4 address, like 192.0.2.1")
    }
    return value
}
