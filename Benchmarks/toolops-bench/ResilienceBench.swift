import ArgumentParser
import Foundation
import ToolOpsCore
import ToolOpsResilience

/// `toolops-bench resilience`: per-call cost of each policy and of the full in-memory chain
/// around a no-op tool, against a bare call of the same tool in the same run.
struct ResilienceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resilience",
        abstract: "Per-call overhead of each resilience policy and the full in-memory chain vs a bare call."
    )

    @Option(help: "Calls per measurement.")
    var calls: Int = 200_000

    @Option(help: "Comma-separated concurrency levels.")
    var concurrency: String = "1,16"

    @Option(help: "Rounds; the fastest round of each row is reported.")
    var rounds: Int = 3

    @Option(help: "Only the rows whose name contains this text (the bare call always runs).")
    var only: String?

    func run() async throws {
        let levels = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let tool = ToolFunction { _ in ToolResult(.null) }
        // A tool that suspends once, as any tool doing I/O does: the timeout then has to watch it.
        let yielding = ToolFunction { _ in
            await Task.yield()
            return ToolResult(.null)
        }
        let generous = try RateLimit(rate: 1_000_000_000, per: .seconds(1), burst: 1_000_000_000)
        func limiter() throws -> any ToolMiddleware {
            try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: generous, key: .tool)]))
        }
        func breaker() throws -> any ToolMiddleware { CircuitBreakerMiddleware(.init(policy: try CircuitBreakerPolicy())) }
        func bulkhead() throws -> any ToolMiddleware { try BulkheadMiddleware(.init(maxConcurrent: 1_000)) }
        func retry() throws -> any ToolMiddleware { RetryMiddleware(.init(policy: try RetryPolicy())) }
        func timeout() throws -> any ToolMiddleware { try TimeoutMiddleware(.init(timeout: .seconds(30))) }

        let rows: [(String, ToolPipeline)] = [
            ("bare call", ToolPipeline(runner: tool, middlewares: [])),
            ("rate limit", ToolPipeline(runner: tool, middlewares: [try limiter()])),
            ("circuit breaker", ToolPipeline(runner: tool, middlewares: [try breaker()])),
            ("bulkhead", ToolPipeline(runner: tool, middlewares: [try bulkhead()])),
            ("retry", ToolPipeline(runner: tool, middlewares: [try retry()])),
            ("timeout", ToolPipeline(runner: tool, middlewares: [try timeout()])),
            ("full chain", ToolPipeline(runner: tool, middlewares: [try limiter(), try retry(), try breaker(), try bulkhead(), try timeout()])),
            ("full chain without timeout", ToolPipeline(runner: tool, middlewares: [try limiter(), try retry(), try breaker(), try bulkhead()])),
            ("bare call, tool suspends", ToolPipeline(runner: yielding, middlewares: [])),
            ("timeout, tool suspends", ToolPipeline(runner: yielding, middlewares: [try timeout()])),
            (
                "full chain, tool suspends",
                ToolPipeline(runner: yielding, middlewares: [try limiter(), try retry(), try breaker(), try bulkhead(), try timeout()])
            ),
        ]
        let call = ToolCall(tool: try ToolID("bench:noop"))
        say("\(calls) calls per cell, best of \(rounds) rounds; overhead = ns/call − bare ns/call at the same concurrency")
        say("")
        say("(rows ending in \"tool suspends\" compare with the bare call of that tool)")
        say("")
        say(pad("pipeline", 30) + pad("conc", 6) + pad("ns/call", 10) + pad("overhead ns", 13) + "calls/s")
        for level in levels {
            var bare: [Bool: Double] = [:]
            for (name, pipeline) in rows where name.hasPrefix("bare call") || only.map({ name.contains($0) }) ?? true {
                let suspends = name.hasSuffix("tool suspends")
                var best = Double.infinity
                for _ in 0..<max(1, rounds) { best = min(best, try await measurePipeline(pipeline, call, calls: calls, concurrency: level)) }
                if name.hasPrefix("bare call") { bare[suspends] = best }
                let overhead = name.hasPrefix("bare call") ? "—" : String(format: "%.0f", best - (bare[suspends] ?? 0))
                say(pad(name, 30) + pad("\(level)", 6) + pad(String(format: "%.0f", best), 10) + pad(overhead, 13) + String(format: "%.0f", 1e9 / best))
            }
        }
    }
}
