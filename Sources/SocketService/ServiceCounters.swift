import Synchronization

/// What the socket service has done; readable from any thread.
public final class ServiceCounters: Sendable {
    /// Control connections accepted.
    public let connections = Atomic<UInt64>(0)
    /// Stack sockets opened for clients.
    public let socketsOpened = Atomic<UInt64>(0)
    /// Stack sockets released (closed by the client, or the client died).
    public let socketsReleased = Atomic<UInt64>(0)
    /// Opens refused because `maximumSockets` were open.
    public let refusedTooMany = Atomic<UInt64>(0)
    /// Connections or sockets refused because the process had no descriptor
    /// left (EMFILE to the client; accepting pauses until a client leaves).
    public let refusedNoDescriptor = Atomic<UInt64>(0)
    /// Requests that were malformed (wrong size or version, unknown operation).
    public let badRequests = Atomic<UInt64>(0)
    /// Datagrams from clients handed to the stack.
    public let datagramsSent = Atomic<UInt64>(0)
    /// Datagrams from clients the stack refused (counted, reported to the client).
    public let sendErrors = Atomic<UInt64>(0)
    /// Messages on a data channel without a valid header (dropped).
    public let badDatagrams = Atomic<UInt64>(0)
    /// Datagrams from the stack passed to clients.
    public let datagramsReceived = Atomic<UInt64>(0)
    /// Datagrams the service had taken from a stack socket for a client
    /// whose channel then failed (it hung up, or shut down reading): lost
    /// with the client, and counted here rather than nowhere.
    public let droppedClientGone = Atomic<UInt64>(0)
    /// Asynchronous errors passed to clients.
    public let errorsDelivered = Atomic<UInt64>(0)
    /// Shared-memory regions made for client sockets (TSP_RING).
    public let regionsShared = Atomic<UInt64>(0)
    /// Sockets released because their client broke its region's rings.
    public let brokenRegions = Atomic<UInt64>(0)
    /// Received datagrams the stack's executor put in a client's region
    /// itself (the rest of `datagramsReceived` went through the service thread).
    public let regionDirect = Atomic<UInt64>(0)
    /// Datagrams the stack's executor took from a client's region and sent
    /// itself (the rest of `datagramsSent` went through the service thread).
    public let regionSendsDirect = Atomic<UInt64>(0)
    /// Doorbells rung on a client's channel: its ring went from empty to
    /// holding datagrams, and the client did not take them at once.
    public let doorbellsRung = Atomic<UInt64>(0)
    /// Doorbells a full channel could not take at once (sent when it had room).
    public let doorbellsDeferred = Atomic<UInt64>(0)
    /// Received datagrams sent on the channel because the client's ring was full.
    public let regionFallbacks = Atomic<UInt64>(0)

    /// Times the stack's executor waited for a busy-polling client's answer
    /// instead of sleeping, and those in which the answer came in time.
    public let answerWaits = Atomic<UInt64>(0)
    public let answersInTime = Atomic<UInt64>(0)

    public init() {}

    /// Name and value of every counter, in a stable order.
    public var snapshot: [(String, UInt64)] {
        [("service.connections", connections.load(ordering: .relaxed)),
         ("service.sockets_opened", socketsOpened.load(ordering: .relaxed)),
         ("service.sockets_released", socketsReleased.load(ordering: .relaxed)),
         ("service.refused_too_many", refusedTooMany.load(ordering: .relaxed)),
         ("service.refused_no_descriptor", refusedNoDescriptor.load(ordering: .relaxed)),
         ("service.bad_requests", badRequests.load(ordering: .relaxed)),
         ("service.tx_datagrams", datagramsSent.load(ordering: .relaxed)),
         ("service.tx_errors", sendErrors.load(ordering: .relaxed)),
         ("service.drop_bad_datagram", badDatagrams.load(ordering: .relaxed)),
         ("service.rx_datagrams", datagramsReceived.load(ordering: .relaxed)),
         ("service.rx_drop_client_gone", droppedClientGone.load(ordering: .relaxed)),
         ("service.rx_errors_delivered", errorsDelivered.load(ordering: .relaxed)),
         ("service.regions_shared", regionsShared.load(ordering: .relaxed)),
         ("service.drop_broken_region", brokenRegions.load(ordering: .relaxed)),
         ("service.rx_region_direct", regionDirect.load(ordering: .relaxed)),
         ("service.tx_region_direct", regionSendsDirect.load(ordering: .relaxed)),
         ("service.rx_doorbells", doorbellsRung.load(ordering: .relaxed)),
         ("service.rx_doorbells_deferred", doorbellsDeferred.load(ordering: .relaxed)),
         ("service.rx_region_fallbacks", regionFallbacks.load(ordering: .relaxed)),
         ("service.answer_waits", answerWaits.load(ordering: .relaxed)),
         ("service.answers_in_time", answersInTime.load(ordering: .relaxed))]
    }
}
