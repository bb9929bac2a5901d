

/// Errors the core reports to socket calls, named after their POSIX meaning.
public enum SocketError: Error, Equatable, Sendable, CustomStringConvertible {
    /// EADDRINUSE: the port is bound by another socket.
    case addressInUse
    /// EADDRNOTAVAIL: the address is not one of this host's.
    case addressNotAvailable
    /// EWOULDBLOCK: nothing queued (receive) or no room to send now.
    case wouldBlock
    /// EMSGSIZE: the datagram cannot be sent in one packet.
    case messageTooLong
    /// ENETUNREACH: no route to the destination.
    case networkUnreachable
    /// EHOSTUNREACH: the next hop did not answer ARP.
    case hostUnreachable
    /// ECONNREFUSED: the peer answered with ICMP port unreachable.
    case connectionRefused
    /// ENOTCONN: the socket has no peer.
    case notConnected
    /// EBADF: the socket was closed.
    case closed
    /// EINVAL: an argument is not valid here.
    case invalidArgument
    /// EACCES: e.g. sending to broadcast without opting in.
    case permissionDenied
    /// EAGAIN for ports: no ephemeral port is free.
    case noPortsAvailable
    /// ECANCELED: the waiting task was cancelled.
    case cancelled
    /// ENOBUFS: a bound was reached (e.g. multicast memberships per socket).
    case noBufferSpace
    /// ENODEV: no such interface (SO_BINDTODEVICE, IP_MULTICAST_IF).
    case noDevice
    /// No stack serves sockets at the path a client of another process
    /// named (nothing there, not a socket, or nobody answering).
    case serviceUnavailable

    public var description: String {
        switch self {
        case .addressInUse: "address already in use"
        case .addressNotAvailable: "cannot assign requested address"
        case .wouldBlock: "operation would block"
        case .messageTooLong: "message too long"
        case .networkUnreachable: "network is unreachable"
        case .hostUnreachable: "no route to host"
        case .connectionRefused: "connection refused"
        case .notConnected: "socket is not connected"
        case .closed: "socket is closed"
        case .invalidArgument: "invalid argument"
        case .permissionDenied: "permission denied"
        case .noPortsAvailable: "no ephemeral port available"
        case .cancelled: "operation cancelled"
        case .noBufferSpace: "no buffer space available"
        case .noDevice: "no such device"
        case .serviceUnavailable: "no tapstack socket service answers there"
        }
    }
}
