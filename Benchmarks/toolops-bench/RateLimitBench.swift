import ArgumentParser
import Foundation
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTesting

/// `toolops-bench ratelimit`: cluster rate-limit decisions/s through `RedisRateLimitStore`
/// vs redis-benchmark running EVALSHA of the same script with the same arguments, and vs
/// Python's `limits` package when it is installed — one fresh redis-server, one run.
struct RateLimitBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ratelimit",
        abstract: "Redis rate-limit decisions/s vs redis-benchmark (same GCRA script) and Python limits."
    )

    @Option(help: "Decisions per measurement.")
    var decisions: Int = 100_000

    @Option(help: "Comma-separated concurrency levels.")
    var concurrency: String = "1,16,64"

    @Option(help: "Commands in flight per connection before the pool uses another (client default 64).")
    var spreadThreshold: Int = 64

    @Option(help: "Rounds per cell; the best round of each side is reported.")
    var rounds: Int = 1

    @Option(help: "Connections in the client's pool.")
    var poolSize: Int = 2

    @Option(name: .customLong("busy-poll-us"), help: "The client's busy polling after activity, µs (0: off, the default; see RedisConfiguration.busyPoll).")
    var busyPollMicroseconds: Int = 0

    @Option(help: "Decisions per measurement for Python limits (it is slow).")
    var pythonDecisions: Int = 20_000

    func run() async throws {
        let levels = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let server = try RedisServer()
        defer { server.stop() }
        var configuration = try RedisConfiguration(url: server.url)
        configuration.spreadThreshold = spreadThreshold
        configuration.poolSize = poolSize
        configuration.busyPoll = .microseconds(busyPollMicroseconds)
        guard case .tcp(let host, let port) = configuration.endpoint else { return }
        let client = try RedisClient(configuration: configuration)
        let probe = try RedisClient(configuration: configuration)
        defer { client.shutdown(); probe.shutdown() }
        let store = RedisRateLimitStore(client: client)
        let limit = try RateLimit(rate: 1_000_000_000, per: .seconds(1), burst: 1_000_000_000)
        let request = RateLimitRequest(key: "bench", limit: limit)
        _ = try await probe.send("SCRIPT", "LOAD", RedisRateLimitStore.script.source)
        let python = pythonAvailable()
        say("client busy polling: \(busyPollMicroseconds == 0 ? "off" : "\(busyPollMicroseconds) µs")")
        say("redis-server at \(host):\(port); \(decisions) decisions per cell (Python limits: \(python ? "\(pythonDecisions)" : "not installed"))")
        say("")
        say(pad("conc", 6) + pad("ToolOps ops/s", 15) + pad("redis-benchmark", 17) + pad("ratio", 8) + pad("EVALSHA/decision", 18)
            + pad("limits ops/s", 14) + pad("ratio", 8) + "redis-benchmark ÷ limits")
        for level in levels {
            var ours = (opsPerSecond: 0.0, count: 0)
            var reference = 0.0
            var perDecision = 0.0
            for _ in 0..<max(1, rounds) {
                let before = try await evalshaCount(probe)
                let round = try await measure(store, request, concurrency: level)
                let after = try await evalshaCount(probe)
                perDecision = Double(after - before) / Double(round.count)
                if round.opsPerSecond > ours.opsPerSecond { ours = round }
                // Same script, same key and arguments as our store sends.
                reference = max(reference, try referenceOps(
                    host: host, port: port, concurrency: level,
                    args: ["EVALSHA", RedisRateLimitStore.script.sha1, "1", "toolops:rl:{bench}", "0", "1",
                           String(Double(limit.emissionInterval) / 1000), String(limit.burst)]))
            }
            var pythonColumns = pad("—", 14) + pad("—", 8) + "—"
            if python, let pythonOps = try? pythonOps(url: server.url, concurrency: level) {
                // The last column is what a C client running the same script achieves against
                // limits: a ceiling for any client when both are bound by the round trip.
                pythonColumns = pad(String(format: "%.0f", pythonOps), 14) + pad(String(format: "%.1f×", ours.opsPerSecond / pythonOps), 8)
                    + String(format: "%.1f×", reference / pythonOps)
            }
            say(pad("\(level)", 6) + pad(String(format: "%.0f", ours.opsPerSecond), 15) + pad(String(format: "%.0f", reference), 17)
                + pad(String(format: "%.2f×", ours.opsPerSecond / reference), 8) + pad(String(format: "%.3f", perDecision), 18) + pythonColumns)
        }
    }

    func measure(_ store: RedisRateLimitStore, _ request: RateLimitRequest, concurrency: Int) async throws -> (opsPerSecond: Double, count: Int) {
        let perTask = max(1, decisions / concurrency)
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask { for _ in 0..<perTask { _ = try await store.acquire([request], maxWait: .zero) } }
            }
            try await group.waitForAll()
        }
        let count = perTask * concurrency
        return (Double(count) / (ContinuousClock.now - start).secondsDouble, count)
    }

    func evalshaCount(_ client: RedisClient) async throws -> Int {
        try await client.commandCalls()["evalsha"] ?? 0
    }

    func referenceOps(host: String, port: Int, concurrency: Int, args: [String]) throws -> Double {
        try redisBenchmarkOps(host: host, port: port, concurrency: concurrency, requests: decisions, args: args)
    }

    func pythonAvailable() -> Bool {
        (try? capture("/usr/bin/env", ["python3", "-c", "import limits, redis"])) != nil
    }

    func pythonOps(url: String, concurrency: Int) throws -> Double {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Benchmarks/limits_bench.py").path
        let output = try capture("/usr/bin/env", ["python3", script, url, "\(concurrency)", "\(pythonDecisions)"])
        guard let value = Double(output.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw ValidationError("limits: \(output)") }
        return value
    }
}
