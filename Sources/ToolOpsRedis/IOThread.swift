#if canImport(Glibc)
import Glibc
#endif

/// Starts a detached OS thread. Each Redis connection does its socket I/O on one, so a
/// blocking `poll` or `getaddrinfo` never occupies Swift's cooperative thread pool.
enum IOThread {
    private final class Body {
        let run: @Sendable () -> Void
        let name: String
        init(_ name: String, _ run: @escaping @Sendable () -> Void) {
            self.name = name
            self.run = run
        }
    }

    static func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let context = Unmanaged.passRetained(Body(name, body)).toOpaque()
        var thread = pthread_t()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attributes, 512 * 1024)
        defer { pthread_attr_destroy(&attributes) }
        let rc = pthread_create(&thread, &attributes, { raw in
            guard let raw else { return nil }
            let body = Unmanaged<Body>.fromOpaque(raw).takeRetainedValue()
            body.run()
            return nil
        }, context)
        // Thread creation only fails when the process is out of resources.
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }
}
