/// Work for the core that arrives outside the link: the executor looks at a
/// source on every turn from when it rang (its `wakeDescriptor` fired) until
/// the executor sleeps, and asks it to arm its wake-up before sleeping.
///
/// A source whose producer rings only when asked keeps the executor's turns
/// free of hand-offs (while the executor looks, nobody rings anybody), and
/// idle sources cost a turn nothing.
/// Register with `NetworkHost.addSource`; both calls run on the executor,
/// outside the core's lock (enter it with `withStack`), and must not block.
public protocol ExecutorSource: AnyObject, Sendable {
    /// Takes what is ready; returns whether there was anything.
    func poll() -> Bool

    /// The executor is about to sleep: arm the wake-up that new work will
    /// ring, then look once more. True (the executor does not sleep) when
    /// work is ready that `poll` would take.
    func prepareToSleep() -> Bool

    /// An eventfd the source's producer writes to wake the executor, which
    /// the link then watches while the source is registered (-1: none; the
    /// producer wakes it some other way). Must stay open as long as the
    /// source lives.
    var wakeDescriptor: Int32 { get }
}

extension ExecutorSource {
    public var wakeDescriptor: Int32 { -1 }
}
