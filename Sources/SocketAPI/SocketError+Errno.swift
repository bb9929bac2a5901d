import Glibc

extension SocketError {
    /// The errno a POSIX socket call reports for this error.
    public var errno: Int32 {
        switch self {
        case .addressInUse: EADDRINUSE
        case .addressNotAvailable: EADDRNOTAVAIL
        case .wouldBlock: EAGAIN
        case .messageTooLong: EMSGSIZE
        case .networkUnreachable: ENETUNREACH
        case .hostUnreachable: EHOSTUNREACH
        case .connectionRefused: ECONNREFUSED
        case .notConnected: ENOTCONN
        case .closed: EBADF
        case .invalidArgument: EINVAL
        case .permissionDenied: EACCES
        case .noPortsAvailable: EAGAIN
        case .cancelled: ECANCELED
        case .noBufferSpace: ENOBUFS
        case .noDevice: ENODEV
        case .serviceUnavailable: ENOENT
        }
    }

    /// The error for an errno a socket call reported, or nil for one this
    /// API has no case for.
    public init?(errno code: Int32) {
        switch code {
        case EADDRINUSE: self = .addressInUse
        case EADDRNOTAVAIL: self = .addressNotAvailable
        case EAGAIN: self = .wouldBlock
        case EMSGSIZE: self = .messageTooLong
        case ENETUNREACH, ENETDOWN: self = .networkUnreachable
        case EHOSTUNREACH: self = .hostUnreachable
        case ECONNREFUSED: self = .connectionRefused
        case ENOTCONN, EDESTADDRREQ: self = .notConnected
        case EBADF: self = .closed
        case EINVAL: self = .invalidArgument
        case EACCES: self = .permissionDenied
        case ECANCELED: self = .cancelled
        case ENOBUFS: self = .noBufferSpace
        case ENODEV: self = .noDevice
        default: return nil
        }
    }
}
