import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsRedis
import ToolOpsServer
import ToolOpsTesting

/// `toolops-bench http`: requests/s and p99 latency with `wrk`, side by side in one run, for a
/// bare Hummingbird route returning the same JSON, the tool endpoint with no policies, and the
/// full pipeline on memory and on Redis stores — all served by this process.
struct HTTPBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http", abstract: "The tool endpoint vs a bare Hummingbird route, with wrk, at 1, 16 and 64 connections.")

    @Option(help: "Comma-separated connection counts.")
    var connections: String = "1,16,64"

    @Option(help: "Seconds per measurement.")
    var seconds: Int = 3

    @Option(help: "Comma-separated rows to run (bare, plain, memory, redis, redis-light); the bare route is always run first.")
    var rows: String = "plain,memory,redis,redis-light"

    @Option(help: "Connections per Redis client (the configuration's state.redis.poolSize).")
    var redisPool: Int = 2

    @Option(help: "Busy polling of the Redis connections, in microseconds (state.redis.busyPoll; 0 = off).")
    var busyPollMicroseconds: Int = 0

    func run() async throws {
        let levels = connections.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        var logger = Logger(label: "bench")
        logger.logLevel = .warning  // completed-call lines are info: not written (a terminal would be measured)
        let metrics = PrometheusMetricsFactory(registry: PrometheusCollectorRegistry())
        let redis = try RedisServer()
        let probe = try RedisClient(url: redis.url)
        defer { probe.shutdown() }
        defer { redis.stop() }

        func configuration(_ backend: ToolOpsConfiguration.Backend) -> ToolOpsConfiguration {
            var configuration = ToolOpsConfiguration()
            configuration.backend = backend
            if case .redis(var redis) = backend {
                redis.poolSize = redisPool
                redis.busyPoll = .microseconds(busyPollMicroseconds)
                configuration.backend = .redis(redis)
            }
            // Every policy on demo:echo; limits high enough never to refuse (their cost is measured, not their refusals).
            configuration.policies.rateLimitRules = [.init(tools: "*", rate: 1_000_000_000, burst: 1_000_000_000)]
            configuration.policies.cacheEnabled = true
            configuration.policies.cacheTools = ["demo:compute"]  // consulted for echo (skipped by rule), not a hit
            configuration.policies.retryMaxAttempts = 2
            configuration.policies.breakerEnabled = true
            configuration.policies.bulkheadMaxConcurrent = 10_000
            configuration.policies.timeout = .seconds(10)
            return configuration
        }
        let memory = try ToolOpsAssembly(configuration(.memory), replicaID: "bench", metricsFactory: metrics, logger: logger)
        let onRedis = try ToolOpsAssembly(configuration(.redis(.init(url: redis.url))), replicaID: "bench", metricsFactory: metrics, logger: logger)
        var withoutBulkhead = configuration(.redis(.init(url: redis.url)))
        withoutBulkhead.policies.bulkheadMaxConcurrent = 0
        let onRedisLight = try ToolOpsAssembly(withoutBulkhead, replicaID: "bench", metricsFactory: metrics, logger: logger)
        let bare = try ToolOpsAssembly({ var c = ToolOpsConfiguration(); c.policies.timeout = .zero; return c }(), replicaID: "bench", logger: logger)

        let router = Router()
        let body = ByteBuffer(string: #"{"hello":"world"}"#)
        router.post("bare") { request, _ -> Response in
            _ = try await request.body.collect(upTo: 1 << 20)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: body))
        }
        ToolRoutes(registry: bare.registry, pipeline: bare.registry).register(on: router.group("plain"))
        memory.routes.register(on: router.group("memory"))
        onRedis.routes.register(on: router.group("redis"))
        onRedisLight.routes.register(on: router.group("redis-light"))
        let port = try RedisServer.freePort()
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        let group = ServiceGroup(services: onRedis.services + onRedisLight.services + memory.services + [app], gracefulShutdownSignals: [], logger: logger)
        let script = NSTemporaryDirectory() + "toolops-bench-post.lua"
        try #"wrk.method = "POST"; wrk.body = '{"hello":"world"}'; wrk.headers["Content-Type"] = "application/json""#
            .write(toFile: script, atomically: true, encoding: .utf8)

        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var ready = false
            for _ in 0..<100 where !ready {
                ready = (try? capture("/usr/bin/env", ["curl", "-sf", "-X", "POST", "http://127.0.0.1:\(port)/redis/v1/tools/demo/echo", "-d", "{}"])) != nil
                if !ready { try await Task.sleep(for: .milliseconds(100)) }
            }
            let selected = Set(rows.split(separator: ",").map { "/" + $0.trimmingCharacters(in: .whitespaces) })
            let rows: [(String, String)] = [
                ("bare Hummingbird route (same JSON)", "/bare"),
                ("tool endpoint, no policies", "/plain/v1/tools/demo/echo"),
                ("full pipeline, memory stores", "/memory/v1/tools/demo/echo"),
                ("full pipeline, Redis stores", "/redis/v1/tools/demo/echo"),
                ("  the same without the bulkhead", "/redis-light/v1/tools/demo/echo"),
            ].filter { $0.1 == "/bare" || selected.contains("/" + ($0.1.split(separator: "/").first ?? "")) }
            print("toolops-bench http — wrk \(seconds) s per cell, server and wrk on the same machine")
            print(pad("", 38) + levels.map { pad("c=\($0): req/s   p99", 28) }.joined())
            var baseline: [Int: (rps: Double, p99: Double)] = [:]
            for (name, path) in rows {
                var line = pad(name, 38)
                for connections in levels {
                    _ = try? wrk(port: port, path: path, connections: connections, seconds: 1, script: script)  // warm-up
                    let commandsBefore = try await probe.commandCalls().values.reduce(0, +)
                    let result = try wrk(port: port, path: path, connections: connections, seconds: seconds, script: script)
                    // Redis commands per call (the probe's own INFO calls are negligible).
                    let commands = try await probe.commandCalls().values.reduce(0, +) - commandsBefore
                    if path == "/bare" { baseline[connections] = result }
                    var cell = String(format: "%8.0f %7.2f ms", result.rps, result.p99 * 1000)
                    if path != "/bare", let base = baseline[connections] {
                        cell += String(format: " (%.2f×, %+.2f ms)", result.rps / base.rps, (result.p99 - base.p99) * 1000)
                    }
                    if path.hasPrefix("/redis") { cell += String(format: " %.3f cmd/call", Double(commands) / (result.rps * Double(seconds))) }
                    line += pad(cell, 28)
                }
                print(line)
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// Requests/s and p99 (seconds) of one wrk run; non-2xx answers make it fail.
    func wrk(port: Int, path: String, connections: Int, seconds: Int, script: String) throws -> (rps: Double, p99: Double) {
        let output = try capture(
            "/usr/bin/env",
            ["wrk", "-t\(min(2, connections))", "-c\(connections)", "-d\(seconds)s", "--latency", "-s", script, "http://127.0.0.1:\(port)\(path)"])
        if output.contains("Non-2xx") { throw ValidationError("\(path) answered errors under load: \(output)") }
        guard let rpsLine = output.split(separator: "\n").first(where: { $0.contains("Requests/sec:") }),
            let rps = Double(rpsLine.split(separator: " ").last ?? ""),
            let p99Line = output.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix("99%") }),
            let p99 = Self.seconds(String(p99Line.split(separator: " ").last ?? ""))
        else { throw ValidationError("cannot read wrk's output: \(output)") }
        return (rps, p99)
    }

    /// wrk's `1.23ms`, `850.00us`, `1.02s`.
    static func seconds(_ text: String) -> Double? {
        for (suffix, scale) in [("us", 1e-6), ("ms", 1e-3), ("s", 1.0)] where text.hasSuffix(suffix) {
            return Double(text.dropLast(suffix.count)).map { $0 * scale }
        }
        return nil
    }
}
