import ArgumentParser
import Foundation
import ToolOpsCache
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsTesting

/// `toolops-bench cache`: cache hits through the middleware (keying, lookup, decode) on each
/// store, against redis-benchmark `GET` of the very entry our Redis store reads, in one run.
struct CacheBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Cache hit latency and hits/s: memory, near cache, file and Redis vs redis-benchmark GET."
    )

    @Option(help: "Hits per measurement.")
    var hits: Int = 100_000

    @Option(help: "Comma-separated concurrency levels.")
    var concurrency: String = "1,16,64"

    @Option(help: "Bytes of the cached value.")
    var valueSize: Int = 1_024

    @Option(help: "Rounds per cell; the best round is reported.")
    var rounds: Int = 2

    func run() async throws {
        let levels = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let server = try RedisServer()
        defer { server.stop() }
        let redisConfiguration = try RedisConfiguration(url: server.url)
        guard case .tcp(let host, let port) = redisConfiguration.endpoint else { return }
        let client = try RedisClient(configuration: redisConfiguration)
        defer { client.shutdown() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("toolops-bench-cache-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }

        let near = try RedisCacheStore(client: client)
        try await near.start()
        let stores: [(String, any CacheStore)] = [
            ("memory", MemoryCacheStore()),
            ("near cache (Redis L1)", near),
            ("file", try FileCacheStore(path: directory)),
            ("Redis (no near cache)", try RedisCacheStore(client: client, configuration: .init(nearCache: nil))),
        ]
        let value = JSONValue.object(["text": .string(String(repeating: "v", count: valueSize))])
        let tool = ToolFunction { _ in ToolResult(value) }
        let call = ToolCall(tool: try ToolID("bench:lookup"), arguments: ["q": "swift", "page": 1])
        let policy = try CachePolicy(defaultTTL: .seconds(3600), jitter: 0)
        let entryKey = RedisKeySchema().cacheEntry(try CacheKeyer().key(for: call).value)

        say("redis-server at \(host):\(port); \(hits) hits per cell; value \(valueSize) bytes; best of \(rounds)")
        say("")
        say(pad("store", 24) + pad("conc", 6) + pad("ns/hit", 10) + pad("hits/s", 12) + pad("redis-benchmark GET", 21) + "ratio")
        for level in levels {
            for (name, store) in stores {
                let cache = try CacheMiddleware(.init(policy: policy), store: store)
                let first = try await cache.run(call, next: tool)
                guard first.value == value, try await cache.run(call, next: tool).metadata["cache"] == "hit" else {
                    throw ValidationError("\(name): warm-up did not hit")
                }
                var best = 0.0
                for _ in 0..<max(1, rounds) { best = max(best, try await measure(cache, call, tool, concurrency: level)) }
                var reference = "—"
                var ratio = "—"
                if name.hasPrefix("Redis") {
                    let rps = try redisBenchmarkOps(host: host, port: port, concurrency: level, requests: hits, args: ["GET", entryKey])
                    reference = String(format: "%.0f", rps)
                    ratio = String(format: "%.2f×", best / rps)
                }
                say(pad(name, 24) + pad("\(level)", 6) + pad(String(format: "%.0f", 1e9 / best * Double(level)), 10)
                    + pad(String(format: "%.0f", best), 12) + pad(reference, 21) + ratio)
            }
        }
        say("")
        say("ns/hit = latency of one hit as seen by one caller (concurrency / throughput)")
        try keyCost()
    }

    /// The keyer alone (canonical JSON + SHA-256 + hex), one caller, for small and large arguments.
    func keyCost() throws {
        say("")
        say(pad("cache key (SHA-256)", 24) + pad("args", 10) + pad("ns/key", 10) + "MB/s hashed")
        let keyer = CacheKeyer()
        let tool = try ToolID("bench:lookup")
        for size in [16, 1_024, 65_536] {
            let call = ToolCall(tool: tool, arguments: ["q": .string(String(repeating: "k", count: size))])
            let count = max(200, 20_000_000 / max(size, 256))
            var best = Double.infinity
            for _ in 0..<max(1, rounds) {
                var sink = 0
                let start = ContinuousClock.now
                for _ in 0..<count { sink &+= try keyer.key(for: call).value.utf8.count }
                best = min(best, (ContinuousClock.now - start).secondsDouble / Double(count))
                guard sink > 0 else { throw ValidationError("empty keys") }
            }
            say(pad("", 24) + pad("\(size) B", 10) + pad(String(format: "%.0f", best * 1e9), 10)
                + String(format: "%.0f", Double(size) / best / 1e6))
        }
    }

    /// Hits per second.
    func measure(_ cache: CacheMiddleware, _ call: ToolCall, _ tool: ToolFunction, concurrency: Int) async throws -> Double {
        let perTask = max(1, hits / concurrency)
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask { for _ in 0..<perTask { _ = try await cache.run(call, next: tool) } }
            }
            try await group.waitForAll()
        }
        return Double(perTask * concurrency) / (ContinuousClock.now - start).secondsDouble
    }
}
