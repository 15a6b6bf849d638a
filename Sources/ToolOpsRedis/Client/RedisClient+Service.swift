import ServiceLifecycle
import Synchronization

extension RedisClient: Service {
    /// Runs until graceful shutdown (or cancellation) begins, then shuts the client down so
    /// that in-flight commands finish and connections close cleanly.
    ///
    /// ```swift
    /// let group = ServiceGroup(services: [client, server], gracefulShutdownSignals: [.sigterm], logger: logger)
    /// try await group.run()
    /// ```
    ///
    /// While running it keeps the pub/sub connection open for its subscriptions (should
    /// reopening it have failed for want of threads or descriptors). It returns once every
    /// connection has closed, or after the command timeout (a connection still waiting for a
    /// reply then is abandoned to its own deadline).
    public func run() async throws {
        await maintainSubscriptions()
        shutdown()
        await drained()
    }

    /// Reopens the pub/sub connection when needed, once a second, and on a cluster or with
    /// Sentinel performs the layout refreshes: those commands ask for, and the periodic one
    /// (``RedisConfiguration/topologyRefreshInterval``, or soon after a failure said it
    /// changed), until graceful shutdown or cancellation.
    package func maintainSubscriptions() async {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                if self.router.standalone == nil { group.addTask { await self.router.runRefreshes() } }
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    await self.router.refreshIfDue()
                    self.subscriber.reviveIfNeeded()
                }
                group.cancelAll()
            }
        }
    }

    /// Waits until every connection has closed after ``shutdown()``, at most the command timeout.
    package func drained() async {
        let until = ContinuousClock.now.advanced(by: configuration.commandTimeout)
        while ContinuousClock.now < until {
            if liveConnections == 0 && subscriber.isIdle && leases.load(ordering: .relaxed) == 0 { return }
            // Cancelled: stop waiting (the connections still close by themselves).
            do { try await Task.sleep(for: .milliseconds(10)) } catch { return }
        }
    }
}
