import CTapstackSystem
import Glibc

/// A POSIX thread that can be joined, for the long-lived driver and stack threads.
public final class JoinableThread: Sendable {
    private final class Body: Sendable {
        let name: String
        let run: @Sendable () -> Void
        init(name: String, run: @escaping @Sendable () -> Void) {
            self.name = name
            self.run = run
        }
    }

    // pthread_t is an integer on Linux: set once in init, read by join.
    private let thread: pthread_t

    /// Starts `body` on a new thread named `name` (at most 15 characters shown).
    public init(name: String, body: @escaping @Sendable () -> Void) {
        let context = Unmanaged.passRetained(Body(name: name, run: body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { context in
            let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
            csys_set_thread_name(String(body.name.prefix(15)))
            body.run()
            return nil
        }, context)
        precondition(result == 0, "pthread_create failed: \(result)")
        self.thread = thread
    }

    /// Waits for the thread to finish. Call once.
    public func join() {
        pthread_join(thread, nil)
    }

    /// Lets the thread finish on its own, never joined: its resources go
    /// when it ends. Call once, instead of `join`.
    public func detach() {
        pthread_detach(thread)
    }
}
