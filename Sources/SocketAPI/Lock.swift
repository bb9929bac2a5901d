import Glibc

/// A plain mutual-exclusion lock (pthread mutex), for guarding non-Sendable
/// state that `Mutex` cannot hand out without transferring it.
public final class Lock: @unchecked Sendable {
    // Heap-allocated so the mutex never moves. The pthread mutex itself is the synchronisation.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always) public func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) public func unlock() { pthread_mutex_unlock(mutex) }
    /// Takes the lock if it is free; never waits.
    @inline(__always) public func tryLock() -> Bool { pthread_mutex_trylock(mutex) == 0 }
}

extension Lock {
    /// Runs `body` holding the lock.
    @inline(__always) public func withLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// A value only reached while holding its `Lock`. Like `Mutex`, but the
/// pthread lock underneath is one ThreadSanitizer understands: contended,
/// `Mutex`'s futex is reported as a race.
public final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = Lock()

    public init(_ value: Value) {
        self.value = value
    }

    /// Runs `body` on the value, holding the lock.
    @inline(__always) public func withLock<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
