import ArgumentParser
import Foundation
import ToolOpsCache
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTesting

/// `toolops-bench cluster`: rate-limit decisions/s and cache hits/s over a spread of keys on a
/// local 3-master Redis Cluster vs one redis-server, side by side in one run, with
/// redis-benchmark doing the same on both (`--cluster` for the cluster) as the reference for
/// what the machine allows.
struct ClusterBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Rate-limit decisions/s and cache hits/s: 3-master cluster vs one Redis.")

    @Option(help: "Operations per measurement.")
    var operations: Int = 200_000

    @Option(help: "Concurrent callers.")
    var concurrency: Int = 64

    @Option(help: "Distinct keys the operations spread over.")
    var keys: Int = 10_000

    @Option(help: "Rounds per cell; the best is reported.")
    var rounds: Int = 2

    func run() async throws {
        let single = try RedisServer()
        let cluster = try RedisClusterServers(masters: 3)
        defer {
            single.stop()
            cluster.stop()
        }
        let keyCount = keys
        say("\(operations) operations per cell over \(keys) keys, \(concurrency) callers; best of \(rounds); leasing off (every decision is a script)")
        say(pad("operation", 28) + pad("one Redis", 12) + pad("cluster", 12) + pad("ratio", 8) + pad("redis-benchmark (INCR, GET): one", 34) + pad("cluster", 12) + "ratio")
        for (name, url) in [("rate-limit decisions/s", "ratelimit"), ("cache hits/s", "cache")] {
            var results: [Double] = []
            for target in [single.url, cluster.url] {
                let client = try RedisClient(url: target)
                defer { client.shutdown() }
                var best = 0.0
                for _ in 0..<max(1, rounds) {
                    best = max(best, try await url == "ratelimit" ? rateLimits(client) : cacheHits(client))
                }
                results.append(best)
            }
            // The reference: redis-benchmark over the same key spread. In cluster mode it runs only
            // its built-in tests, so a write per decision is INCR and a hit is GET.
            let args = ["-t", url == "ratelimit" ? "incr" : "get"]
            let one = try redisBenchmark(port: single.port, cluster: false, args: args, keys: keyCount)
            let many = try redisBenchmark(port: cluster.servers[0].port, cluster: true, args: args, keys: keyCount)
            say(pad(name, 28) + pad(String(format: "%.0f", results[0]), 12) + pad(String(format: "%.0f", results[1]), 12)
                + pad(String(format: "%.2f×", results[1] / results[0]), 8) + pad(String(format: "%.0f", one), 34) + pad(String(format: "%.0f", many), 12)
                + String(format: "%.2f×", many / one))
        }
    }

    func rateLimits(_ client: RedisClient) async throws -> Double {
        let store = RedisRateLimitStore(client: client, leasing: .off)
        let limit = try RateLimit(rate: 1_000_000_000, per: .seconds(1), burst: 1_000_000_000)
        let requests = (0..<keys).map { RateLimitRequest(key: "k:\($0)", limit: limit) }
        return try await measure { index in _ = try await store.acquire([requests[index % requests.count]], maxWait: .zero) }
    }

    func cacheHits(_ client: RedisClient) async throws -> Double {
        let store = try RedisCacheStore(client: client, configuration: .init(nearCache: nil))
        let tool = try ToolID("bench:tool")
        let now = WallClock().now
        let cacheKeys = try (0..<keys).map { try CacheKey("k:\($0)") }
        for key in cacheKeys {
            try await store.set(key, CacheEntry(result: ToolResult(["v": 1]), tool: tool, storedAt: now, freshUntil: now + .seconds(600)), encodedValue: nil)
        }
        return try await measure { index in
            guard try await store.get(cacheKeys[index % cacheKeys.count]) != nil else { throw ValidationError("a miss") }
        }
    }

    /// Operations per second with `concurrency` tasks, each operation given a different index.
    func measure(_ operation: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
        let perTask = max(1, operations / concurrency)
        let concurrency = self.concurrency
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<concurrency {
                group.addTask { for round in 0..<perTask { try await operation(round * concurrency + task) } }
            }
            try await group.waitForAll()
        }
        return Double(perTask * concurrency) / (ContinuousClock.now - start).secondsDouble
    }

    func redisBenchmark(port: Int, cluster: Bool, args: [String], keys: Int) throws -> Double {
        try redisBenchmarkOps(
            host: "127.0.0.1", port: port, concurrency: concurrency, requests: operations,
            options: ["-r", "\(keys)"] + (cluster ? ["--cluster"] : []), args: args)
    }
}
