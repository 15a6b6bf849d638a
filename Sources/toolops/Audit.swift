import ArgumentParser
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend

/// `toolops audit`: the cluster's last authentication and authorization decisions, newest
/// first, one JSON object per line (from the Redis stream every replica appends to).
struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the cluster's last audit entries (newest first) from Redis.")

    @Option(help: "Redis URL: redis://[user:pass@]host:port[/db], rediss://…, unix:///path")
    var redis: String = "redis://127.0.0.1:6379"

    @Option(help: "Key prefix in Redis (one per deployment sharing a Redis).")
    var keyPrefix: String = "toolops"

    @Option(help: "Number of entries.")
    var count: Int = 20

    func run() async throws {
        var configuration = try RedisConfiguration(url: redis)
        configuration.connectTimeout = .seconds(3)
        let client = try RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let sink = RedisAuditSink(client: client, keys: RedisKeySchema(prefix: keyPrefix))
        for entry in try await sink.last(count) {
            print(try JSONValue.object(entry.mapValues(JSONValue.string)).canonicalString())
        }
    }
}
