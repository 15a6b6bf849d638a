import ArgumentParser
import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import ToolOpsCore
import ToolOpsServer
import ToolOpsTesting

/// `toolops-bench pipeline`: the assemblies of `toolops-bench http` called directly (no HTTP, no
/// wrk), reporting wall time and this process's CPU time per call — CPU per call is what bounds
/// a replica's throughput, and it is far steadier than requests/s on a shared machine.
struct PipelineBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline", abstract: "The tool pipeline called in-process: wall and CPU time per call, per row, at 1, 16 and 64 concurrent callers.")

    @Option(help: "Comma-separated concurrency levels.")
    var concurrency: String = "1,16,64"

    @Option(help: "Calls per measurement.")
    var calls: Int = 200_000

    @Option(help: "Comma-separated rows (plain, layers — the registry behind 8 pass-through middlewares —, memory, redis, redis-light).")
    var rows: String = "plain,memory,redis,redis-light"

    @Flag(help: "Also measure the memory and Redis pipelines with each middleware left out in turn (what each one costs).")
    var ablation = false

    func run() async throws {
        let levels = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let redis = try RedisServer()
        defer { redis.stop() }
        let assemblies = try BenchAssemblies(redisURL: redis.url, redisPool: 2, busyPollMicroseconds: 0, logger: logger)
        let selected = Set(rows.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        let group = ServiceGroup(services: assemblies.services, gracefulShutdownSignals: [], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let call = try assemblies.memory.registry.prepare(ToolCall(tool: ToolID(namespace: "demo", name: "echo"), arguments: ["hello": "world"]))
            print("toolops-bench pipeline — \(calls) calls per cell; wall ns/call, CPU ns/call and context switches per 1,000 calls (this process)")
            print(pad("", ablation ? 44 : 14) + levels.map { pad("c=\($0): wall    CPU  cs/1k", 30) }.joined())
            var rows = assemblies.rows.filter { selected.contains($0.0) }
            if ablation {
                rows += assemblies.variants(.leftOut).filter { selected.contains($0.row) }.map { ("  " + $0.label, $0.pipeline) }
            }
            for (name, pipeline) in rows {
                var line = pad(name, ablation ? 44 : 14)
                for level in levels {
                    let before = ProcessUsage.now()
                    let wall = try await measurePipeline(pipeline, call, calls: calls, concurrency: level)
                    let used = ProcessUsage.now() - before
                    // measurePipeline warms up with up to 1,000 calls per task before timing.
                    let counted = Double(max(1, calls / level) * level + min(1000, max(1, calls / level)) * level)
                    line += pad(String(format: "%7.0f %7.0f %6.1f", wall, used.cpuSeconds * 1e9 / counted, Double(used.contextSwitches) * 1000 / counted), 30)
                }
                print(line)
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

/// This process's CPU time (user + system, all threads) and context switches (voluntary and
/// not) so far.
struct ProcessUsage {
    var cpuSeconds: Double
    var contextSwitches: Int

    static func now() -> ProcessUsage {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return ProcessUsage(
            cpuSeconds: Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6,
            contextSwitches: usage.ru_nvcsw + usage.ru_nivcsw)
    }

    static func - (lhs: ProcessUsage, rhs: ProcessUsage) -> ProcessUsage {
        ProcessUsage(cpuSeconds: lhs.cpuSeconds - rhs.cpuSeconds, contextSwitches: lhs.contextSwitches - rhs.contextSwitches)
    }
}

/// The middle value (the mean of the middle two for an even count); 0 for none.
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

/// The assemblies `toolops-bench http` and `toolops-bench pipeline` compare: no policies, every
/// policy on memory stores, on Redis stores, and on Redis without the bulkhead.
struct BenchAssemblies {
    let plain: ToolOpsAssembly
    let memory: ToolOpsAssembly
    let onRedis: ToolOpsAssembly
    let onRedisLight: ToolOpsAssembly

    init(redisURL: String, redisPool: Int, busyPollMicroseconds: Int, logger: Logger) throws {
        let metrics = PrometheusMetricsFactory(registry: PrometheusCollectorRegistry())
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
        memory = try ToolOpsAssembly(configuration(.memory), replicaID: "bench", metricsFactory: metrics, logger: logger)
        onRedis = try ToolOpsAssembly(configuration(.redis(.init(url: redisURL))), replicaID: "bench", metricsFactory: metrics, logger: logger)
        var withoutBulkhead = configuration(.redis(.init(url: redisURL)))
        withoutBulkhead.policies.bulkheadMaxConcurrent = 0
        onRedisLight = try ToolOpsAssembly(withoutBulkhead, replicaID: "bench", metricsFactory: metrics, logger: logger)
        plain = try ToolOpsAssembly({ var c = ToolOpsConfiguration(); c.policies.timeout = .zero; return c }(), replicaID: "bench", logger: logger)
    }

    var services: [any Service] { onRedis.services + onRedisLight.services + memory.services }

    /// Rows by their short names; `plain` is the registry alone (no middleware at all).
    var rows: [(String, ToolPipeline)] {
        [
            ("plain", ToolPipeline(runner: plain.registry, middlewares: [])), ("layers", layered),
            ("memory", memory.pipeline), ("redis", onRedis.pipeline), ("redis-light", onRedisLight.pipeline),
        ]
    }

    /// The registry behind ``PassThrough/layers`` pass-through middlewares: what the chain's
    /// layers cost, apart from any policy.
    var layered: ToolPipeline { ToolPipeline(runner: plain.registry, middlewares: Array(repeating: PassThrough(), count: PassThrough.layers)) }

    enum Variant { case leftOut, alone }

    /// The memory and Redis pipelines with each middleware left out in turn (`leftOut`), or
    /// each middleware alone in front of the tool (`alone`): what each one costs.
    func variants(_ kind: Variant) -> [(row: String, index: Int, label: String, registry: ToolRegistry, pipeline: ToolPipeline)] {
        [("memory", memory), ("redis", onRedis)].flatMap { row, assembly in
            assembly.pipeline.middlewares.enumerated().map { index, middleware in
                let name = String(describing: type(of: middleware))
                switch kind {
                case .leftOut:
                    var kept = assembly.pipeline.middlewares
                    kept.remove(at: index)
                    return (row, index, "\(row) without \(name)", assembly.registry, ToolPipeline(runner: assembly.registry, middlewares: kept))
                case .alone:
                    return (row, index, "\(row): only \(name)", assembly.registry, ToolPipeline(runner: assembly.registry, middlewares: [middleware]))
                }
            }
        }
    }
}
