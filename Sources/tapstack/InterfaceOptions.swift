import ArgumentParser
import Link
import Stack
import Wire

/// Options that name the stack's identity on the link, shared by every
/// subcommand that brings the stack up.
struct InterfaceOptions: ParsableArguments {
    @Option(name: .long, help: "TAP device to create or attach to.")
    var interface: String = "tap0"

    @Option(name: .long, help: ArgumentHelp("The stack's IPv4 address and prefix length. (default: 192.0.2.2/24)", valueName: "a.b.c.d/len"),
            transform: { text in
                guard let value = IPv4Interface(text) else {
                    throw ValidationError("'\(text)' is not an IPv4 address with prefix length, like 192.0.2.2/24")
                }
                return value
            })
    var address: IPv4Interface = IPv4Interface("192.0.2.2/24")!

    @Option(name: .long, help: ArgumentHelp("The stack's Ethernet address. (default: 02:00:00:00:00:02)", valueName: "aa:bb:cc:dd:ee:ff"),
            transform: { text in
                guard let value = MACAddress(text) else {
                    throw ValidationError("'\(text)' is not a MAC address, like 02:00:00:00:00:02")
                }
                guard !value.isMulticast, value != .zero else {
                    throw ValidationError("'\(text)' is not a unicast MAC address")
                }
                return value
            })
    var mac: MACAddress = MACAddress("02:00:00:00:00:02")!

    @Option(name: .long, help: ArgumentHelp("Default gateway for destinations off the subnet (none by default).", valueName: "a.b.c.d"),
            transform: { text in
                guard let value = IPv4Address(text) else {
                    throw ValidationError("'\(text)' is not an IPv4 address, like 192.0.2.1")
                }
                return value
            })
    var gateway: IPv4Address?

    @Option(name: .long, help: "IP MTU of the link, 576 to 1500.")
    var mtu: Int = 1500

    @Option(name: .long, help: ArgumentHelp("How the driver moves frames: io_uring (a batch of reads and writes per system call; falls back to syscalls when the kernel refuses it) or syscalls (one read() or write() per frame).", valueName: "io_uring|syscalls"))
    var linkIO: LinkIOMode = .ioUring

    func validate() throws {
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

    var stackConfiguration: StackConfiguration {
        var configuration = StackConfiguration(mac: mac, interface: address, gateway: gateway)
        configuration.mtu = mtu
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
