import ArgumentParser
import Foundation
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTesting

/// `toolops-bench keys`: does per-tenant state stay bounded? Two waves of N *distinct* tenants
/// go through a per-tenant rate limit, breaker and bulkhead (plus retry and timeout) on one
/// backend, with an idle period between them long enough for the first wave's state to stop
/// mattering. Reports this process's resident memory (VmRSS) and, for the file stores, the
/// files in their directories: at the start, after wave 1, after the idle period, after wave 2.
/// The allocator need not hand freed memory back, so the measure is wave 2's growth.
struct KeysBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Resident memory and state files under two waves of distinct tenants, per backend.")

    @Option(help: "Backends: memory, file, redis (comma-separated).")
    var backends: String = "memory,file,redis"

    @Option(help: "Tenants per wave for the memory stores.")
    var memoryTenants: Int = 1_000_000

    @Option(help: "Tenants per wave for the file stores (each call is three locked file updates).")
    var fileTenants: Int = 20_000

    @Option(help: "Tenants per wave for the Redis stores.")
    var redisTenants: Int = 100_000

    @Option(help: "Concurrent callers.")
    var concurrency: Int = 16

    @Option(help: "Seconds between the StoreSweeper's sweeps.")
    var sweepInterval: Double = 1

    func run() async throws {
        say(pad("backend", 9) + pad("tenants", 10) + pad("RSS start", 11) + pad("after wave 1", 14) + pad("after idle", 12)
            + pad("after wave 2", 14) + pad("wave 2 growth", 15) + "files (wave 1 / idle / wave 2)")
        for backend in backends.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            switch backend {
            case "memory":
                let stores = (MemoryRateLimitStore(), MemoryCircuitBreakerStore(), MemoryBulkheadStore())
                try await measure("memory", tenants: memoryTenants, stores: stores)
            case "file":
                let path = NSTemporaryDirectory() + "toolops-keys-\(UUID().uuidString.prefix(8))"
                defer { try? FileManager.default.removeItem(atPath: path) }
                let limits = try FileRateLimitStore(directory: path + "/rl")
                let breakers = try FileCircuitBreakerStore(directory: path + "/cb")
                let bulkheads = try FileBulkheadStore(directory: path + "/bh")
                try await measure(
                    "file", tenants: fileTenants, stores: (limits, breakers, bulkheads),
                    files: { limits.files.fileCount + breakers.files.fileCount + bulkheads.files.fileCount })
            case "redis":
                let server = try RedisServer()
                defer { server.stop() }
                let backend = try RedisBackend(url: server.url)
                let breakers = backend.makeCircuitBreakerStore()
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await backend.run() }
                    try await breakers.start()
                    try await measure("redis", tenants: redisTenants, stores: (backend.makeRateLimitStore(), breakers, backend.makeBulkheadStore()))
                    group.cancelAll()
                }
            default:
                throw ValidationError("unknown backend \(backend)")
            }
        }
    }

    func measure(
        _ name: String, tenants: Int, stores: (any RateLimitStore, any CircuitBreakerStore, any BulkheadStore),
        files: () -> Int = { 0 }
    ) async throws {
        // The stores sweep as they are written to; the sweeper releases what a quiet period leaves.
        let sweepable = [stores.0, stores.1, stores.2].compactMap { $0 as? any SweepableStore }
        let sweeper = Task { try await StoreSweeper(stores: sweepable, interval: .seconds(sweepInterval)).run() }
        defer { sweeper.cancel() }
        let tool = ToolFunction { _ in ToolResult(.null) }
        let pipeline = try ToolPipeline(runner: tool) {
            try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: try RateLimit(rate: 10, per: .seconds(1)), key: .tenant)]), store: stores.0)
            RetryMiddleware(.init(policy: try RetryPolicy()))
            CircuitBreakerMiddleware(
                .init(policy: try CircuitBreakerPolicy(window: .time(.seconds(2)), minimumCalls: 5), key: .tenant), store: stores.1)
            try BulkheadMiddleware(.init(maxConcurrent: 4, key: .tenant), store: stores.2)
            try TimeoutMiddleware(.init(timeout: .seconds(30)))
        }
        let start = residentBytes()
        try await wave(pipeline, tenants: 0..<tenants)
        let afterFirst = (residentBytes(), files())
        // Longer than the breaker's window and the buckets' refill (wave 1's state no longer
        // matters), plus a sweeper interval.
        try await Task.sleep(for: .milliseconds(3_500))
        let afterIdle = (residentBytes(), files())
        try await wave(pipeline, tenants: tenants..<(2 * tenants))
        let afterSecond = (residentBytes(), files())
        func mb(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
        say(pad(name, 9) + pad("\(tenants)", 10) + pad(mb(start), 11) + pad(mb(afterFirst.0), 14) + pad(mb(afterIdle.0), 12)
            + pad(mb(afterSecond.0), 14) + pad("+" + mb(afterSecond.0 - afterIdle.0), 15)
            + "\(afterFirst.1) / \(afterIdle.1) / \(afterSecond.1)")
    }

    /// One call per tenant, `concurrency` callers.
    func wave(_ pipeline: ToolPipeline, tenants: Range<Int>) async throws {
        let tool = try ToolID("bench:tenant")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var index = tenants.lowerBound + worker
                    while index < tenants.upperBound {
                        var call = ToolCall(tool: tool)
                        call.context.toolTenant = "tenant-\(index)"
                        _ = try await pipeline.run(call)
                        index += concurrency
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// This process's resident memory (VmRSS).
    func residentBytes() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let field = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?.split(separator: " ").dropFirst().first
        return (Int(field ?? "0") ?? 0) * 1024
    }
}
