import Logging
import ServiceLifecycle
import ToolOpsCore
import ToolOpsObserve
import ToolOpsRedis
import ToolOpsRedisBackend

/// Publishes this replica's call totals to Redis every ``interval`` (`<prefix>:stats:{<replica>}`,
/// expiring after ten intervals), so `toolops status` and every replica's dashboard see the
/// whole cluster's traffic. Best effort: a failed write is retried at the next tick. At
/// graceful shutdown the entry is removed.
public struct StatisticsPublisher: Service {
    let statistics: ToolStatistics
    let client: RedisClient
    let key: String
    let interval: Duration
    let logger: Logger

    public init(statistics: ToolStatistics, client: RedisClient, keys: RedisKeySchema, replicaID: String, interval: Duration = .seconds(1), logger: Logger) {
        self.statistics = statistics
        self.client = client
        self.key = keys.replicaStatistics(replicaID)
        self.interval = max(interval, .milliseconds(10))
        self.logger = logger
    }

    public func run() async throws {
        let milliseconds = interval.nanosecondsClamped / 1_000_000 * 10
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    _ = try await client.send("SET", key, try statistics.json().canonicalEncoding(), "PX", milliseconds)
                } catch {
                    logger.debug("statistics not published", metadata: ["error": "\(error)"])
                }
                do { try await Task.sleep(for: interval) } catch { break }
            }
        }
        _ = try? await client.send("DEL", key)
    }
}
