import Glibc
import Host
import SocketAPI

/// Why the socket service could not start, in one line.
public enum ServiceError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Another process already serves this path.
    case inUse(path: String)
    /// Something that is not a socket is in the way.
    case notASocket(path: String)
    /// A system call failed.
    case systemError(operation: String, errno: Int32)

    public var description: String {
        switch self {
        case .inUse(let path): "another tapstack already serves \(path)"
        case .notASocket(let path): "\(path) exists and is not a socket; remove it or choose another --socket"
        case .systemError(let operation, let code): "\(operation): \(String(cString: strerror(code)))"
        }
    }
}
