import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
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

    @Option(help: "Comma-separated rows to run (bare-short, spin, bare-pipeline, plain, layers, memory, redis, redis-light); the bare route (at the tool rows' path shape) is always run first.")
    var rows: String = "plain,memory,redis,redis-light"

    @Option(help: "Rounds: every row is measured once per round, in turn, and the medians are reported (the machine's noise moves in minutes, not seconds).")
    var repeats: Int = 3

    @Option(help: "Event-loop threads of the HTTP server (0: NIO's singleton group, one per core).")
    var eventLoopThreads: Int = 0

    @Option(help: "How long the `spin` row's handler computes, in microseconds: a calibration row (CPU that is neither ours nor Hummingbird's, added per request).")
    var spinMicroseconds: Int = 20

    @Flag(help: "Also measure the memory and Redis pipelines with each middleware left out in turn (what each one costs over HTTP).")
    var ablation = false

    @Flag(help: "Also measure each middleware of the memory and Redis pipelines alone in front of the tool (what each one costs over HTTP by itself).")
    var solo = false

    @Option(name: .customLong("wrk-cpus"), help: "CPUs wrk runs on (taskset's list, e.g. `1`; empty: wherever the scheduler puts it). Run the bench itself under `taskset -c 0` to keep the server and redis-server off them.")
    var wrkCPUs: String = ""

    @Option(help: "Connections per Redis client (the configuration's state.redis.poolSize).")
    var redisPool: Int = 2

    @Option(help: "Busy polling of the Redis connections, in microseconds (state.redis.busyPoll; 0 = off).")
    var busyPollMicroseconds: Int = 0

    func run() async throws {
        let levels = connections.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        var logger = Logger(label: "bench")
        logger.logLevel = .warning  // completed-call lines are info: not written (a terminal would be measured)
        let redis = try RedisServer()
        let probe = try RedisClient(url: redis.url)
        defer { probe.shutdown() }
        defer { redis.stop() }
        let assemblies = try BenchAssemblies(redisURL: redis.url, redisPool: redisPool, busyPollMicroseconds: busyPollMicroseconds, logger: logger)

        let router = Router()
        let body = ByteBuffer(string: #"{"hello":"world"}"#)
        // The reference answers at the tool rows' path shape (five components, as
        // `/redis/v1/tools/demo/echo`): the router's cost grows with the path, and it is not the
        // endpoint's. `bare-short` answers at `/bare`.
        for path in ["bare/v1/tools/demo/echo", "bare"] {
            router.post(RouterPath(path)) { request, _ -> Response in
                _ = try await request.body.collect(upTo: 1 << 20)
                return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: body))
            }
        }
        router.post("spin") { request, _ -> Response in
            _ = try await request.body.collect(upTo: 1 << 20)
            let until = ContinuousClock.now + .microseconds(spinMicroseconds)
            while ContinuousClock.now < until {}  // computing, as a handler would
            return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: body))
        }
        let prepared = try assemblies.memory.registry.prepare(ToolCall(tool: ToolID(namespace: "demo", name: "echo"), arguments: ["hello": "world"]))
        let memoryPipeline = assemblies.memory.pipeline
        router.post("bare-pipeline") { request, _ -> Response in
            _ = try await request.body.collect(upTo: 1 << 20)
            _ = try await memoryPipeline.run(prepared)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: body))
        }
        ToolRoutes(registry: assemblies.plain.registry, pipeline: assemblies.plain.registry).register(on: router.group("plain"))
        ToolRoutes(registry: assemblies.plain.registry, pipeline: assemblies.layered).register(on: router.group("layers"))
        assemblies.memory.routes.register(on: router.group("memory"))
        assemblies.onRedis.routes.register(on: router.group("redis"))
        assemblies.onRedisLight.routes.register(on: router.group("redis-light"))
        var ablated: [(String, String)] = []
        let kinds: [(BenchAssemblies.Variant, String)] = (ablation ? [(.leftOut, "without")] : []) + (solo ? [(.alone, "only")] : [])
        for (kind, infix) in kinds {
            for variant in assemblies.variants(kind) {
                let group = "\(variant.row)-\(infix)-\(variant.index)"
                ToolRoutes(registry: variant.registry, pipeline: variant.pipeline).register(on: router.group(RouterPath(group)))
                ablated.append(("  " + variant.label, "/\(group)/v1/tools/demo/echo"))
            }
        }
        let port = try RedisServer.freePort()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
            eventLoopGroupProvider: eventLoopThreads > 0 ? .shared(MultiThreadedEventLoopGroup(numberOfThreads: eventLoopThreads)) : .singleton,
            logger: logger)
        let group = ServiceGroup(services: assemblies.services + [app], gracefulShutdownSignals: [], logger: logger)
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
            let selected = Set(rows.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            let rows: [(String, String)] = [
                ("bare Hummingbird route (same JSON)", "bare", "/bare/v1/tools/demo/echo"),
                ("bare route at /bare", "bare-short", "/bare"),
                ("bare route + \(spinMicroseconds) µs of CPU", "spin", "/spin"),
                ("bare route + memory pipeline", "bare-pipeline", "/bare-pipeline"),
                ("tool endpoint, no policies", "plain", "/plain/v1/tools/demo/echo"),
                ("  with \(PassThrough.layers) pass-through layers", "layers", "/layers/v1/tools/demo/echo"),
                ("full pipeline, memory stores", "memory", "/memory/v1/tools/demo/echo"),
                ("full pipeline, Redis stores", "redis", "/redis/v1/tools/demo/echo"),
                ("  the same without the bulkhead", "redis-light", "/redis-light/v1/tools/demo/echo"),
            ].filter { $0.1 == "bare" || selected.contains($0.1) }.map { ($0.0, $0.2) }
                + ablated.filter { row in selected.contains { row.1.hasPrefix("/" + $0 + "-without-") || row.1.hasPrefix("/" + $0 + "-only-") } }
            print("toolops-bench http — wrk \(seconds) s per cell, \(repeats) interleaved rounds, server and wrk on the same machine")
            print("medians over the rounds; ratios and added p99 are taken against the bare route of the same round (range in brackets)")
            print(pad("", 34) + pad("conns", 7) + pad("req/s", 9) + pad("ratio", 22) + pad("p99", 10) + pad("Δp99", 20) + pad("CPU/req", 9) + pad("cs/req", 8) + "Redis cmd/call")
            for connections in levels {
                var cells: [String: [Cell]] = [:]
                for _ in 0..<repeats {
                    var base: Cell?
                    for (_, path) in rows {
                        _ = try? wrk(port: port, path: path, connections: connections, seconds: 1, script: script)  // warm-up
                        let commandsBefore = try await probe.commandCalls().values.reduce(0, +)
                        let before = ProcessUsage.now()
                        let result = try wrk(port: port, path: path, connections: connections, seconds: seconds, script: script)
                        let used = ProcessUsage.now() - before
                        // Redis commands per call (the probe's own INFO calls are negligible).
                        let commands = try await probe.commandCalls().values.reduce(0, +) - commandsBefore
                        let requests = result.rps * Double(seconds)
                        var cell = Cell(
                            rps: result.rps, p99: result.p99, cpuPerRequest: used.cpuSeconds / requests,
                            switchesPerRequest: Double(used.contextSwitches) / requests, commandsPerCall: Double(commands) / requests)
                        if let base {
                            cell.ratio = result.rps / base.rps
                            cell.addedP99 = result.p99 - base.p99
                        } else {
                            base = cell
                        }
                        cells[path, default: []].append(cell)
                    }
                }
                for (name, path) in rows {
                    let runs = cells[path] ?? []
                    var line = pad(name, 34) + pad("\(connections)", 7) + pad(String(format: "%.0f", median(runs.map(\.rps))), 9)
                    if path == rows[0].1 {
                        line += pad("", 22) + pad(String(format: "%.2f ms", median(runs.map(\.p99)) * 1000), 10) + pad("", 20)
                    } else {
                        let ratios = runs.map(\.ratio), added = runs.map(\.addedP99)
                        line += pad(String(format: "%.2f× [%.2f–%.2f]", median(ratios), ratios.min() ?? 0, ratios.max() ?? 0), 22)
                        line += pad(String(format: "%.2f ms", median(runs.map(\.p99)) * 1000), 10)
                        line += pad(String(format: "%+.2f [%+.1f…%+.1f]", median(added) * 1000, (added.min() ?? 0) * 1000, (added.max() ?? 0) * 1000), 20)
                    }
                    line += pad(String(format: "%.0f µs", median(runs.map(\.cpuPerRequest)) * 1e6), 9)
                    line += pad(String(format: "%.2f", median(runs.map(\.switchesPerRequest))), 8)
                    if path.hasPrefix("/redis") { line += String(format: "%.3f", median(runs.map(\.commandsPerCall))) }
                    print(line)
                }
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// One row's measurement in one round.
    struct Cell {
        var rps: Double
        var p99: Double
        var cpuPerRequest: Double
        var switchesPerRequest: Double
        var commandsPerCall: Double
        var ratio: Double = 1
        var addedP99: Double = 0
    }

    /// Requests/s and p99 (seconds) of one wrk run; non-2xx answers make it fail.
    func wrk(port: Int, path: String, connections: Int, seconds: Int, script: String) throws -> (rps: Double, p99: Double) {
        let output = try capture(
            "/usr/bin/env",
            (wrkCPUs.isEmpty ? [] : ["taskset", "-c", wrkCPUs])
                + ["wrk", "-t\(min(2, connections))", "-c\(connections)", "-d\(seconds)s", "--latency", "-s", script, "http://127.0.0.1:\(port)\(path)"])
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

/// A middleware that only passes the call on: the cost of a layer of the chain itself.
struct PassThrough: ToolMiddleware {
    static let layers = 8
    func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult { try await next.run(call) }
}
