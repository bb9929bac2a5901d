import CTapstackChannel
import Sockets
import Stack
import Synchronization

/// One client connection of the socket service and, once opened, the stack
/// socket it drives. Touched only by the service thread, except `flagged`.
final class RemoteSocket {
    let id: UInt64
    /// The control connection.
    let control: Int32
    /// The client process (SO_PEERCRED), for `tapstack ss`; -1 if unknown.
    var pid: Int32 = -1
    var uid: UInt32 = 0
    /// The service's end of the data channel; -1 until opened.
    var data: Int32 = -1
    var socket: UDPSocket?
    var callbackToken: Int?
    /// Epoll interest of `data` (TSV_IN, TSV_OUT).
    var dataInterest: UInt32 = 0
    /// Datagrams from the client the link had no room for, oldest first;
    /// while any wait, the data channel is not read (backpressure).
    var waitingForStack: [(destination: SocketAddress?, options: DatagramSendOptions, payload: [UInt8])] = []
    /// The client wants every datagram framed with its facts (TSP_OPT_WANT_INFO).
    var wantsInfo = false
    /// Messages for the client its channel had no room for, oldest first;
    /// while any wait, the stack socket is not drained.
    var waitingForClient: [[UInt8]] = []
    /// The socket's shared region (TSP_RING), once the client asked for one.
    var region: OpaquePointer?
    /// The client asked for received datagrams in the region.
    var receivesInRegion = false
    /// Received datagrams go on the channel until the client has read all
    /// that is there (the ring was full, or it just switched): order.
    var receiveFallback = false
    /// Set by the stack's readiness callback; the service clears it when it looks.
    let flag = ReadyFlag()

    init(id: UInt64, control: Int32) {
        self.id = id
        self.control = control
    }
}

/// Marks a socket as having news from the stack, once until looked at, so a
/// burst of datagrams queues its socket once.
final class ReadyFlag: Sendable {
    private let raised = Atomic<Bool>(false)

    /// Raises the flag; true when it was down.
    func raise() -> Bool { !raised.exchange(true, ordering: .acquiringAndReleasing) }

    /// Lowers it before the service looks at the socket.
    func lower() { raised.store(false, ordering: .releasing) }
}
