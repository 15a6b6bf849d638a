import ServiceLifecycle
import ToolOpsRedis

/// Keeps a store's pub/sub subscription until graceful shutdown or cancellation.
///
/// `subscribe` is retried with the client's reconnect backoff while Redis is unreachable (a
/// replica that starts during a Redis outage catches up when Redis is back; meanwhile the
/// store works without its channel). Once subscribed, the client restores the subscription
/// after reconnects by itself. `unsubscribe` runs when the wait ends.
func followChannel(
    client: RedisClient, subscribe: @escaping @Sendable () async throws -> Void, unsubscribe: @escaping @Sendable () -> Void
) async {
    let subscribed = await cancelWhenGracefulShutdown { () async -> Bool in
        var failures = 0
        while !Task.isCancelled {
            do {
                try await subscribe()
                return true
            } catch {
                let delay = client.configuration.reconnect.delay(afterFailures: failures)
                failures += 1
                try? await Task.sleep(for: max(delay, .milliseconds(10)))
            }
        }
        return false
    }
    // Returns at graceful shutdown; throws (ignored) when cancelled first.
    if subscribed { try? await gracefulShutdown() }
    unsubscribe()
}
