import ServiceLifecycle

extension RedisClient: Service {
    /// Runs until graceful shutdown (or cancellation) begins, then shuts the client down so
    /// that in-flight commands finish and connections close cleanly.
    ///
    /// ```swift
    /// let group = ServiceGroup(services: [client, server], gracefulShutdownSignals: [.sigterm], logger: logger)
    /// try await group.run()
    /// ```
    public func run() async throws {
        try? await gracefulShutdown()
        shutdown()
    }
}
