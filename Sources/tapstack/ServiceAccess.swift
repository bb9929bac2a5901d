import ArgumentParser
import CTapstackChannel
import Glibc
import SocketService

/// Which running stack a command talks to: the socket service of
/// `--interface` at its default path, or the one `--socket` names.
struct ServiceLocation: ParsableArguments {
    @Option(name: .long, help: "TAP device of the running stack.")
    var interface: String = "tap0"

    @Option(name: .long, help: ArgumentHelp("The running stack's socket service. (default: $TAPSTACK_SOCKET, else /run/tapstack/INTERFACE.sock)", valueName: "path"))
    var socket: String?

    var path: String { socket ?? environmentServicePath ?? defaultServicePath(interface: interface) }
}

/// Where `tapstack run` serves sockets for `interface` unless told otherwise.
func defaultServicePath(interface: String) -> String { "/run/tapstack/\(interface).sock" }

/// $TAPSTACK_SOCKET, when set: the service a user (or `tapstack exec`) chose.
var environmentServicePath: String? {
    guard let value = getenv("TAPSTACK_SOCKET").map({ String(cString: $0) }), !value.isEmpty else { return nil }
    return value
}

/// Asks the stack serving `path` a question (`tapstack ss`, `tapstack stats`)
/// and returns its JSON answer.
func queryService(at path: String, _ what: tsp_query) throws -> [UInt8] {
    var fd: Int32 = -1
    var length = 0
    guard tsc_query(path, Int32(what.rawValue), &fd, &length) == 0 else {
        let error = errno
        switch error {
        case ENOENT, ECONNREFUSED:
            throw CleanFailure("no tapstack serves \(path) (start one with 'tapstack run', or name its --socket or --interface)")
        case EACCES, EPERM:
            throw CleanFailure("no permission to connect to \(path) (it is mode 0660: run as its owner or group)")
        default:
            throw CleanFailure("cannot ask the stack at \(path): \(String(cString: strerror(error)))")
        }
    }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: length)
    var done = 0
    while done < length {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, length - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw CleanFailure("the answer from \(path) ended early") }
        done += n
    }
    return bytes
}
