import ArgumentParser
import Foundation
import Logging
import ToolOpsCore
import ToolOpsRedis
import ToolOpsTesting

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "toolops-bench",
        abstract: "Benchmarks, printed side by side with a reference measured in the same run.",
        version: ToolOps.version,
        subcommands: [RedisBench.self, SoakBench.self, ClusterBench.self, DecodeBench.self, KeysBench.self, ResilienceBench.self, RateLimitBench.self, BreakerBench.self, CacheBench.self, ObserveBench.self, AuthBench.self, HTTPBench.self, PipelineBench.self, HandlerBench.self]
    )
}

/// `toolops-bench redis`: GET and EVALSHA through our client vs redis-benchmark, against one
/// freshly started redis-server, at the same concurrency.
struct RedisBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis",
        abstract: "GET and EVALSHA ops/s through ToolOpsRedis vs redis-benchmark at concurrency 1, 16, 64."
    )

    @Option(help: "Requests per measurement.")
    var requests: Int = 100_000

    @Option(help: "Comma-separated concurrency levels.")
    var concurrency: String = "1,16,64"

    @Option(help: "Connections in our client's pool.")
    var poolSize: Int = 2

    @Option(name: .customLong("busy-poll-us"), help: "Our client's busy polling after activity, µs (0: off, the default).")
    var busyPollMicroseconds: Int = 0

    @Option(help: "Rounds per cell; the best round of each side is reported.")
    var rounds: Int = 1

    @Option(help: "Use this server instead of starting one (it must allow SET/SCRIPT LOAD).")
    var redisURL: String?

    func run() async throws {
        let levels = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let server: RedisServer? = redisURL == nil ? try RedisServer() : nil
        defer { server?.stop() }
        guard let url = redisURL ?? server?.url else { throw ValidationError("no Redis to benchmark") }
        var configuration = try RedisConfiguration(url: url)
        configuration.poolSize = poolSize
        configuration.busyPoll = .microseconds(busyPollMicroseconds)
        let client = try RedisClient(configuration: configuration)
        defer { client.shutdown() }
        guard case .tcp(let host, let port) = configuration.endpoint else {
            throw ValidationError("redis-benchmark needs a TCP endpoint")
        }

        let key = "bench:key"
        try await client.send("SET", key, "xxx")  // 3 bytes, redis-benchmark's default -d
        let script = RedisScript("return redis.call('GET', KEYS[1])")
        _ = try await client.send("SCRIPT", "LOAD", script.source)

        say("redis-server \(try await serverVersion(client)) at \(host):\(port); \(requests) requests per cell; pool \(poolSize); busy polling \(busyPollMicroseconds == 0 ? "off" : "\(busyPollMicroseconds) µs")")
        say("")
        say(pad("command", 8) + pad("conc", 6) + pad("ToolOpsRedis ops/s", 20) + pad("redis-benchmark ops/s", 23) + "ratio")
        var rows: [(String, Int, Double, Double)] = []
        for (name, command, args) in [
            ("GET", RedisCommand("GET", key), ["GET", key]),
            ("EVALSHA", RedisCommand.evalSHA(script, keys: [key]), ["EVALSHA", script.sha1, "1", key]),
        ] {
            for level in levels {
                var ours = 0.0
                var reference = 0.0
                for _ in 0..<max(1, rounds) {
                    ours = max(ours, try await measure(client, command, concurrency: level))
                    reference = max(reference, try referenceOps(host: host, port: port, concurrency: level, args: args))
                }
                rows.append((name, level, ours, reference))
                say(pad(name, 8) + pad("\(level)", 6) + pad(format(ours), 20) + pad(format(reference), 23)
                    + String(format: "%.2f×", ours / reference))
            }
        }
    }

    func serverVersion(_ client: RedisClient) async throws -> String {
        let info = try await client.send("INFO", "server").string ?? ""
        return info.split(separator: "\r\n").first { $0.hasPrefix("redis_version:") }?.dropFirst(14).description ?? "?"
    }

    /// ops/s of `concurrency` tasks each sending `command` back to back through one client.
    func measure(_ client: RedisClient, _ command: RedisCommand, concurrency: Int) async throws -> Double {
        let perTask = max(1, requests / concurrency)
        // Warm up: connect the pool and fault in the code paths.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency { group.addTask { for _ in 0..<min(200, perTask) { try await client.send(command) } } }
            try await group.waitForAll()
        }
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask { for _ in 0..<perTask { try await client.send(command) } }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - start
        return Double(perTask * concurrency) / elapsed.secondsDouble
    }

    func referenceOps(host: String, port: Int, concurrency: Int, args: [String]) throws -> Double {
        try redisBenchmarkOps(host: host, port: port, concurrency: concurrency, requests: requests, args: args)
    }

    func format(_ value: Double) -> String { String(format: "%.0f", value) }
}

/// Prints a line unbuffered, so progress shows while the benchmark runs.
func say(_ line: String = "") {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
