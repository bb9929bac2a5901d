import CTun
import Glibc
import SocketAPI

/// Why a TAP device could not be opened. The descriptions are single lines
/// meant for the user.
public enum TapError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The name is empty or longer than the kernel allows.
    case invalidName(String)
    /// `/dev/net/tun` is missing (no tun module, or a container without it).
    case tunMissing
    /// `/dev/net/tun` exists but this user may not open it.
    case tunNotAccessible
    /// Creating or attaching to the device was refused.
    case permissionDenied(device: String)
    /// Another process has the device open (it stayed busy for `TapDevice.busyRetry`).
    case deviceBusy(device: String)
    /// The interface exists but is not a TAP device (`kind` says what it is).
    case notATapDevice(device: String, kind: String)
    /// Any other failure, with the errno it gave.
    case systemError(operation: String, errno: Int32)

    public var description: String {
        switch self {
        case .invalidName(let name):
            "invalid interface name '\(name)': 1 to \(ctun_ifnamsiz() - 1) characters"
        case .tunMissing:
            "cannot open /dev/net/tun: no such device (load the tun module: modprobe tun)"
        case .tunNotAccessible:
            "no permission to open /dev/net/tun: run as root, or make it usable by all (chmod 0666 /dev/net/tun, as standard Linux systems do)"
        case .permissionDenied(let device):
            "no permission to open TAP device '\(device)': run as root (CAP_NET_ADMIN), or create it first with 'ip tuntap add \(device) mode tap user $USER'"
        case .deviceBusy(let device):
            "cannot attach to '\(device)': another process has it open (still busy after \(TapDevice.busyRetryMilliseconds) ms)"
        case .notATapDevice(let device, let kind):
            "cannot attach to '\(device)': it is \(kind), not a TAP device"
        case .systemError(let operation, let code):
            "\(operation) failed: \(String(cString: strerror(code)))"
        }
    }
}

/// What a TAP device opened with a virtio-net header does for the stack.
public struct TapOffloads: Sendable, Equatable, CustomStringConvertible {
    /// Frames carry a virtio-net header (`IFF_VNET_HDR`) both ways.
    public var virtioHeader: Bool
    /// Checksums may be left partial both ways (`TUN_F_CSUM`): the kernel
    /// hands over its frames without computing their transport checksums and
    /// accepts ours likewise.
    public var checksum: Bool
    /// The kernel takes UDP segmentation writes and may hand over UDP GSO
    /// frames (`TUN_F_USO4 | TUN_F_USO6`, kernel 6.2).
    public var udpSegmentation: Bool

    /// No header, no offload: one plain frame per read and write.
    public static let none = TapOffloads(virtioHeader: false, checksum: false, udpSegmentation: false)

    public var description: String {
        guard virtioHeader else { return "none" }
        return ["virtio-net header", checksum ? "checksum" : nil, udpSegmentation ? "UDP segmentation" : nil]
            .compactMap { $0 }.joined(separator: ", ")
    }
}

/// The offloads to ask the kernel for when opening a TAP device.
/// What the device carries: Ethernet frames (TAP) or IP packets (TUN).
public enum DeviceMode: String, Sendable, CaseIterable {
    /// `IFF_TAP`: whole Ethernet frames; the stack answers ARP.
    case tap
    /// `IFF_TUN`: IPv4 packets without a link header, as VPNs and overlays
    /// use; no ARP. The link gives the stack each packet behind an Ethernet
    /// header of its own making and takes it off again on the way out.
    case tun
}

public enum TapOffloadRequest: String, Sendable, CaseIterable {
    /// A virtio-net header, checksum offload and UDP segmentation, as far as the kernel grants them.
    case all = "on"
    /// A virtio-net header and checksum offload only (as a kernel before 6.2 grants).
    case checksum
    /// Plain frames: every checksum computed, one datagram per write.
    case none = "off"
}

/// An open Linux TAP device (`IFF_TAP | IFF_NO_PI`, with `IFF_VNET_HDR`
/// unless asked not to): whole Ethernet frames, no packet-information
/// prefix. The fd is non-blocking.
///
/// Closing the fd removes a device this process created; a persistent device
/// (made with `ip tuntap add`) stays.
public final class TapDevice: Sendable {
    /// The kernel's name for the device.
    public let name: String
    /// The non-blocking file descriptor.
    public let fd: Int32
    /// True when the device outlives this process (created with `ip tuntap add`).
    public let isPersistent: Bool
    /// The virtio-net header and offloads the kernel agreed to.
    public let offloads: TapOffloads
    /// TAP (Ethernet frames) or TUN (IP packets).
    public let mode: DeviceMode
    /// The kernel's statistics for the device when it was opened (a
    /// persistent device keeps counting across stacks).
    private let statisticsAtOpen: DeviceStatistics?

    /// The kernel's statistics for the device since this stack opened it:
    /// among them the frames the kernel dropped on their way to the stack.
    /// Nil when the device is not found (a test's socket pair).
    public var statistics: DeviceStatistics? {
        guard let baseline = statisticsAtOpen, let now = DeviceStatistics.read(interface: name) else { return nil }
        return now.since(baseline)
    }

    /// Opens `/dev/net/tun` and attaches to the TAP device `name`, creating it
    /// if it does not exist (which needs CAP_NET_ADMIN).
    /// - Parameter offloads: what to ask for, taking what the kernel grants
    ///   (`offloads` says which).
    /// - Throws: `TapError` with a one-line explanation.
    /// - Parameter mode: TAP, or TUN (offloads are then not asked for: plain packets).
    public init(name: String, mode: DeviceMode = .tap, offloads request: TapOffloadRequest = .all) throws(TapError) {
        let request = mode == .tun ? .none : request
        var actual = [CChar](repeating: 0, count: Int(ctun_ifnamsiz()))
        var persistent: Int32 = 0
        var stage: Int32 = 0
        var err: Int32 = 0
        var fd: Int32 = -1
        // A device whose last user just died (SIGKILL, a fast restart) stays
        // busy for a few milliseconds while the kernel releases it: try again,
        // for a bounded time, before saying it is busy.
        let giveUp = monotonicNanoseconds() + UInt64(Self.busyRetryMilliseconds) * 1_000_000
        while true {
            fd = ctun_open_tap(name, (request == .none ? 0 : CTUN_VNET_HDR) | (mode == .tun ? CTUN_MODE_TUN : 0),
                               &actual, &persistent, &stage, &err)
            let ownKind = mode == .tun ? CTUN_KIND_TUN : CTUN_KIND_TAP
            guard fd < 0, UInt32(stage) == CTUN_STAGE_SETIFF.rawValue, err == EBUSY || err == EINVAL,
                  ctun_interface_kind(name) == Int32(ownKind.rawValue), monotonicNanoseconds() < giveUp else { break }
            usleep(10_000)
        }
        guard fd >= 0 else {
            if UInt32(stage) == CTUN_STAGE_SETIFF.rawValue && (err == EBUSY || err == EINVAL) {
                switch UInt32(ctun_interface_kind(name)) {
                case CTUN_KIND_TUN.rawValue where mode == .tap: throw .notATapDevice(device: name, kind: "a TUN device")
                case CTUN_KIND_TAP.rawValue where mode == .tun: throw .notATapDevice(device: name, kind: "a TAP device, not TUN")
                case CTUN_KIND_OTHER.rawValue: throw .notATapDevice(device: name, kind: "not a TUN/TAP device")
                default: break
                }
            }
            switch (UInt32(stage), err) {
            case (CTUN_STAGE_NAME.rawValue, _): throw .invalidName(name)
            case (CTUN_STAGE_OPEN.rawValue, ENOENT), (CTUN_STAGE_OPEN.rawValue, ENODEV), (CTUN_STAGE_OPEN.rawValue, ENXIO):
                throw .tunMissing
            case (CTUN_STAGE_OPEN.rawValue, EPERM), (CTUN_STAGE_OPEN.rawValue, EACCES): throw .tunNotAccessible
            case (_, EPERM), (_, EACCES): throw .permissionDenied(device: name)
            case (CTUN_STAGE_SETIFF.rawValue, EBUSY), (CTUN_STAGE_SETIFF.rawValue, EINVAL): throw .deviceBusy(device: name)
            case (CTUN_STAGE_OPEN.rawValue, _): throw .systemError(operation: "open /dev/net/tun", errno: err)
            default: throw .systemError(operation: "TUNSETIFF \(name)", errno: err)
            }
        }
        self.fd = fd
        self.mode = mode
        self.name = actual.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        self.isPersistent = persistent != 0
        offloads = request == .none ? .none : Self.negotiateOffloads(fd, segmentation: request == .all)
        statisticsAtOpen = DeviceStatistics.read(interface: self.name)
    }

    /// Asks for checksum and UDP segmentation offload, then checksum alone;
    /// the kernel refuses flags it does not know (USO before 6.2).
    private static func negotiateOffloads(_ fd: Int32, segmentation: Bool) -> TapOffloads {
        if segmentation, ctun_set_offload(fd, UInt32(CTUN_OFFLOAD_CSUM | CTUN_OFFLOAD_USO4 | CTUN_OFFLOAD_USO6)) == 0 {
            return TapOffloads(virtioHeader: true, checksum: true, udpSegmentation: true)
        }
        if ctun_set_offload(fd, UInt32(CTUN_OFFLOAD_CSUM)) == 0 {
            return TapOffloads(virtioHeader: true, checksum: true, udpSegmentation: false)
        }
        return TapOffloads(virtioHeader: true, checksum: false, udpSegmentation: false)
    }

    /// How long a busy device is tried again before giving up.
    public static let busyRetryMilliseconds = 2000

    /// Takes ownership of an open non-blocking descriptor that carries one
    /// frame per read and write (for tests: one end of a datagram socket
    /// pair), each with a virtio-net header when `offloads` says so.
    init(adopting fd: Int32, name: String, offloads: TapOffloads = .none, mode: DeviceMode = .tap) {
        self.fd = fd
        self.mode = mode
        self.name = name
        isPersistent = false
        self.offloads = offloads
        statisticsAtOpen = nil
    }

    deinit { Glibc.close(fd) }
}
