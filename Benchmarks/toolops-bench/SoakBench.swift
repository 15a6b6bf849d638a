import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import ToolOpsCore
import ToolOpsRedis
import ToolOpsServer
import ToolOpsTesting

/// `toolops-bench soak`: mixed load through three replicas (three assemblies, each with its own
/// Redis client, as three servers would have) on one fresh redis-server — or a 3-master cluster
/// with `--cluster` — for a bounded time, sampling this process's memory, descriptors and
/// threads and Redis's connections and memory. Reports the growth from the end of the warm-up
/// to the end (target: ≤ 5 %).
struct SoakBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak", abstract: "Bounded mixed load through three replicas; memory, descriptors and connections over time.")

    @Option(help: "Seconds of load.")
    var duration: Int = 600

    @Option(help: "Seconds of warm-up (the baseline is taken at its end).")
    var warmUp: Int = 60

    @Option(help: "Seconds between samples.")
    var interval: Int = 30

    @Option(help: "Concurrent callers per replica.")
    var callers: Int = 8

    @Flag(help: "A local 3-master Redis Cluster instead of one redis-server.")
    var cluster = false

    struct Sample {
        var at: Int
        var rssKiB: Int
        var descriptors: Int
        var threads: Int
        var redisClients: Int
        var redisMemoryKiB: Int
        var calls: Int
    }

    func run() async throws {
        var logger = Logger(label: "soak")
        logger.logLevel = .error
        let single = cluster ? nil : try RedisServer()
        let nodes = cluster ? try RedisClusterServers(masters: 3) : nil
        defer {
            single?.stop()
            nodes?.stop()
        }
        let url = single?.url ?? nodes?.url ?? ""
        var configuration = ToolOpsConfiguration()
        configuration.backend = .redis(.init(url: url))
        configuration.policies.rateLimitRules = [.init(tools: "*", rate: 200, per: .seconds(1), burst: 400, key: "tenant")]
        configuration.policies.cacheEnabled = true
        configuration.policies.cacheTTL = .seconds(5)
        configuration.policies.cacheTools = ["demo:compute"]
        configuration.policies.breakerEnabled = true
        configuration.policies.breakerMinimumCalls = 20
        configuration.policies.breakerOpenDuration = .seconds(2)
        configuration.policies.bulkheadMaxConcurrent = 64
        configuration.policies.timeout = .seconds(2)
        let replicas = try (0..<3).map { try ToolOpsAssembly(configuration, replicaID: "soak-\($0)", logger: logger) }
        let admin = try RedisClient(url: url, logger: logger)
        defer { admin.shutdown() }
        let group = ServiceGroup(services: replicas.flatMap(\.services), gracefulShutdownSignals: [], logger: logger)
        let counts = Counts()
        say("soak: \(duration) s of mixed load (compute with a churning cache, echo under 1,000 tenants' limits, flaky behind a breaker, sleep in a bulkhead), \(callers) callers × 3 replicas on \(cluster ? "a 3-master cluster" : "one redis-server")")
        say(pad("t (s)", 8) + pad("RSS (MiB)", 11) + pad("fds", 6) + pad("threads", 9) + pad("redis clients", 15) + pad("redis MiB", 11) + "calls")
        var samples: [Sample] = []
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let end = ContinuousClock.now + .seconds(duration)
            for (index, replica) in replicas.enumerated() {
                let pipeline = replica.pipeline
                let callers = self.callers
                for caller in 0..<callers {
                    tasks.addTask {
                        var generator = SystemRandomNumberGenerator()
                        var round = 0
                        while ContinuousClock.now < end {
                            round += 1
                            let call = try Self.call(round: round, caller: caller + index * callers, using: &generator)
                            do { _ = try await pipeline.run(call) } catch { counts.failures.add(1, ordering: .relaxed) }
                            counts.calls.add(1, ordering: .relaxed)
                        }
                    }
                }
            }
            let started = ContinuousClock.now
            while ContinuousClock.now < end {
                let sample = try await Self.sample(at: Int((ContinuousClock.now - started).secondsDouble.rounded()), admin: admin, calls: counts.calls.load(ordering: .relaxed))
                samples.append(sample)
                say(pad("\(sample.at)", 8) + pad(String(format: "%.1f", Double(sample.rssKiB) / 1024), 11) + pad("\(sample.descriptors)", 6)
                    + pad("\(sample.threads)", 9) + pad("\(sample.redisClients)", 15) + pad(String(format: "%.1f", Double(sample.redisMemoryKiB) / 1024), 11)
                    + "\(sample.calls)")
                try await Task.sleep(for: .seconds(min(interval, max(1, Int((end - ContinuousClock.now).secondsDouble)))))
            }
            samples.append(try await Self.sample(at: duration, admin: admin, calls: counts.calls.load(ordering: .relaxed)))
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        guard let baseline = samples.first(where: { $0.at >= warmUp }) ?? samples.first, let last = samples.last else { return }
        func growth(_ from: Int, _ to: Int) -> String { from == 0 ? "—" : String(format: "%+.1f %%", Double(to - from) / Double(from) * 100) }
        say("")
        say("after warm-up (t=\(baseline.at) s) → end (t=\(last.at) s), \(last.calls) calls, \(counts.failures.load(ordering: .relaxed)) refused or failed (limits, breaker, flaky):")
        say("  RSS \(baseline.rssKiB / 1024) → \(last.rssKiB / 1024) MiB (\(growth(baseline.rssKiB, last.rssKiB))); descriptors \(baseline.descriptors) → \(last.descriptors) (\(growth(baseline.descriptors, last.descriptors))); threads \(baseline.threads) → \(last.threads)")
        say("  Redis clients \(baseline.redisClients) → \(last.redisClients) (\(growth(baseline.redisClients, last.redisClients))); Redis memory \(baseline.redisMemoryKiB / 1024) → \(last.redisMemoryKiB / 1024) MiB (\(growth(baseline.redisMemoryKiB, last.redisMemoryKiB)))")
    }

    final class Counts: Sendable {
        let calls = Atomic<Int>(0)
        let failures = Atomic<Int>(0)
    }

    static func call(round: Int, caller: Int, using generator: inout SystemRandomNumberGenerator) throws -> ToolCall {
        switch round % 4 {
        case 0:
            return ToolCall(tool: try ToolID("demo:compute"), arguments: ["n": .integer(Int64.random(in: 2...2_000, using: &generator))])
        case 1:
            var call = ToolCall(tool: try ToolID("demo:echo"), arguments: ["caller": .integer(Int64(caller))])
            call.context.toolTenant = "tenant-\(Int.random(in: 0..<1_000, using: &generator))"
            return call
        case 2:
            return ToolCall(tool: try ToolID("demo:flaky"), arguments: ["failureRate": .number(caller % 4 == 0 ? 0.9 : 0.05)])
        default:
            return ToolCall(tool: try ToolID("demo:sleep"), arguments: ["ms": .integer(1)])
        }
    }

    static func sample(at: Int, admin: RedisClient, calls: Int) async throws -> Sample {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }.flatMap { line in
                Int(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
            } ?? 0
        }
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        var clients = 0
        var memory = 0
        for master in try await admin.masters() {
            let info = try await admin.send(RedisCommand("INFO"), toNode: master).string ?? ""
            for line in info.split(separator: "\r\n") {
                if line.hasPrefix("connected_clients:") { clients += Int(line.dropFirst("connected_clients:".count)) ?? 0 }
                if line.hasPrefix("used_memory:") { memory += (Int(line.dropFirst("used_memory:".count)) ?? 0) / 1024 }
            }
        }
        return Sample(at: at, rssKiB: field("VmRSS"), descriptors: descriptors, threads: field("Threads"), redisClients: clients, redisMemoryKiB: memory, calls: calls)
    }
}
