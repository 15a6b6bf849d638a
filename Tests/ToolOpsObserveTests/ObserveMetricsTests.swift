import Metrics
import Synchronization
import MetricsTestKit
import Testing
import ToolOpsCache
import ToolOpsCore
import ToolOpsObserve
import ToolOpsResilience
import Tracing

@Suite("Observe: metrics")
struct ObserveMetricsTests {
    let search = try! ToolID("github:search")

    @Test func callsAreCountedByToolAndOutcome() async throws {
        let metrics = TestMetrics()
        let observe = Observability(.init(tools: .registered([search]), logger: nil), metricsFactory: metrics)
        let pipeline = try ToolPipeline(runner: echo) {
            observe.middleware
            try RateLimitMiddleware(
                .init(rules: [RateLimitRule(limit: try RateLimit(rate: 1, per: .seconds(3600), burst: 3))], observer: observe.resilience))
        }
        _ = try await pipeline.run(ToolCall(tool: search))
        _ = try await pipeline.run(ToolCall(tool: search))
        await #expect(throws: ToolFailure.self) { try await pipeline.run(ToolCall(tool: search, arguments: ["fail": true])) }
        for _ in 0..<2 {
            await #expect(throws: ToolOpsError.self) { try await pipeline.run(ToolCall(tool: search)) }
        }

        func calls(_ outcome: String) throws -> Int64 {
            try metrics.expectCounter("toolops_tool_calls_total", [("tool", "github:search"), ("outcome", outcome)]).totalValue
        }
        #expect(try calls("ok") == 2)
        #expect(try calls("error") == 1)
        #expect(try calls("rate_limited") == 2)
        #expect(try calls("timed_out") == 0)
        let durations = try metrics.expectTimer("toolops_tool_call_duration_seconds", [("tool", "github:search")]).values
        #expect(durations.count == 5)
        #expect(durations.allSatisfy { $0 > 0 && $0 < 5_000_000_000 })
        let rule = "tool:*"
        #expect(try metrics.expectCounter("toolops_ratelimit_decisions_total", [("rule", rule), ("result", "allowed")]).totalValue == 3)
        #expect(try metrics.expectCounter("toolops_ratelimit_decisions_total", [("rule", rule), ("result", "refused")]).totalValue == 2)
    }

    @Test func toolsThatAreNotRegisteredShareOneLabel() async throws {
        let metrics = TestMetrics()
        let observe = Observability(.init(tools: .registered([search]), logger: nil), metricsFactory: metrics)
        let pipeline = ToolPipeline(runner: echo) { observe.middleware }
        for index in 0..<50 { _ = try await pipeline.run(ToolCall(tool: try ToolID("made-up:tool\(index)"))) }
        _ = try await pipeline.run(ToolCall(tool: search))

        let labels = Set(metrics.counters.filter { $0.label == "toolops_tool_calls_total" }.flatMap { $0.dimensions.filter { $0.0 == "tool" }.map(\.1) })
        #expect(labels == ["github:search", "unregistered"])
        #expect(try metrics.expectCounter("toolops_tool_calls_total", [("tool", "unregistered"), ("outcome", "ok")]).totalValue == 50)
    }

    @Test func firstSeenLabelsStopAtTheirMaximum() async throws {
        let metrics = TestMetrics()
        let observe = Observability(.init(tools: .firstSeen(maximum: 3), logger: nil), metricsFactory: metrics)
        let pipeline = ToolPipeline(runner: echo) { observe.middleware }
        for index in 0..<10 { _ = try await pipeline.run(ToolCall(tool: try ToolID("ns:t\(index)"))) }
        let labels = Set(metrics.counters.filter { $0.label == "toolops_tool_calls_total" }.flatMap { $0.dimensions.filter { $0.0 == "tool" }.map(\.1) })
        #expect(labels == ["ns:t0", "ns:t1", "ns:t2", "unregistered"])
    }

    @Test func cacheLookupsAreCountedPerTool() async throws {
        let metrics = TestMetrics()
        let observe = Observability(.init(tools: .registered([search]), logger: nil), metricsFactory: metrics)
        let cache = try CacheMiddleware(.init(policy: try CachePolicy(defaultTTL: .seconds(60)), observer: observe.cache), store: MemoryCacheStore())
        let pipeline = ToolPipeline(runner: echo) {
            observe.middleware
            cache
        }
        for _ in 0..<3 { _ = try await pipeline.run(ToolCall(tool: search, arguments: ["q": "swift"])) }
        #expect(try metrics.expectCounter("toolops_cache_misses_total", [("tool", "github:search")]).totalValue == 1)
        #expect(try metrics.expectCounter("toolops_cache_hits_total", [("tool", "github:search")]).totalValue == 2)
        #expect(try metrics.expectCounter("toolops_tool_calls_total", [("tool", "github:search"), ("outcome", "cached")]).totalValue == 2)
        #expect(try metrics.expectCounter("toolops_tool_calls_total", [("tool", "github:search"), ("outcome", "ok")]).totalValue == 1)
    }

    @Test func breakerStateTransitionsAndRejectionsAreSeries() async throws {
        let metrics = TestMetrics()
        let observe = Observability(.init(tools: .registered([search]), logger: nil), metricsFactory: metrics)
        let policy = try CircuitBreakerPolicy(window: .count(4), failureRateThreshold: 0.5, minimumCalls: 2, openDuration: .seconds(60))
        let pipeline = ToolPipeline(runner: echo) {
            observe.middleware
            CircuitBreakerMiddleware(.init(policy: policy, observer: observe.resilience))
        }
        for _ in 0..<2 {
            await #expect(throws: ToolFailure.self) { try await pipeline.run(ToolCall(tool: search, arguments: ["fail": true])) }
        }
        await #expect(throws: ToolOpsError.self) { try await pipeline.run(ToolCall(tool: search)) }

        let state = metrics.recorders.first { $0.label == "toolops_circuit_state" }
        #expect(state?.lastValue == 2)
        let breaker = try #require(state?.dimensions.first { $0.0 == "breaker" }?.1)
        #expect(try metrics.expectCounter("toolops_circuit_transitions_total", [("breaker", breaker), ("to", "open")]).totalValue == 1)
        #expect(try metrics.expectCounter("toolops_circuit_rejections_total", [("breaker", breaker)]).totalValue == 1)
        #expect(try metrics.expectCounter("toolops_tool_calls_total", [("tool", "github:search"), ("outcome", "circuit_open")]).totalValue == 1)
    }

    @Test func bulkheadInUseRisesWhileACallRunsAndFallsAfter() async throws {
        let metrics = TestMetrics()
        let observe = Observability(.init(tools: .registered([search]), logger: nil), metricsFactory: metrics)
        let entered = AsyncStream<Void>.makeStream()
        let release = AsyncStream<Void>.makeStream()
        let slow = ToolFunction { _ in
            entered.continuation.yield()
            for await _ in release.stream { break }
            return ToolResult(.null)
        }
        let pipeline = try ToolPipeline(runner: slow) {
            observe.middleware
            try BulkheadMiddleware(.init(maxConcurrent: 1, observer: observe.resilience))
        }
        async let first: ToolResult = pipeline.run(ToolCall(tool: search))
        for await _ in entered.stream { break }
        let meter = try #require(metrics.meters.first { $0.label == "toolops_bulkhead_in_use" })
        #expect(meter.lastValue == 1)
        await #expect(throws: ToolOpsError.self) { try await pipeline.run(ToolCall(tool: search)) }
        release.continuation.yield()
        _ = try await first
        #expect(meter.lastValue == 0)
        let bulkhead = try #require(meter.dimensions.first { $0.0 == "bulkhead" }?.1)
        #expect(try metrics.expectCounter("toolops_bulkhead_rejections_total", [("bulkhead", bulkhead)]).totalValue == 1)
        #expect(try metrics.expectCounter("toolops_tool_calls_total", [("tool", "github:search"), ("outcome", "bulkhead_full")]).totalValue == 1)
    }

    @Test func breakerLabelsAreBoundedWhenKeysComeFromTenants() async throws {
        let metrics = TestMetrics()
        let observe = Observability(.init(tools: .registered([search]), maximumPolicyLabels: 2, logger: nil), metricsFactory: metrics)
        let policy = try CircuitBreakerPolicy(window: .count(2), minimumCalls: 1, openDuration: .seconds(60))
        let pipeline = ToolPipeline(runner: echo) {
            observe.middleware
            CircuitBreakerMiddleware(.init(policy: policy, key: .tenant, observer: observe.resilience))
        }
        for tenant in 0..<6 {
            var context = ServiceContext.topLevel
            context.toolTenant = "tenant-\(tenant)"
            await #expect(throws: ToolFailure.self) { try await pipeline.run(ToolCall(tool: search, arguments: ["fail": true], context: context)) }
        }
        let breakers = Set(metrics.recorders.filter { $0.label == "toolops_circuit_state" }.compactMap { $0.dimensions.first { $0.0 == "breaker" }?.1 })
        #expect(breakers.count == 3)
        #expect(breakers.contains("other"))
    }

    /// The running totals a dashboard reads are exact under concurrent calls (lock-free
    /// counters per tool and outcome), and list only outcomes that happened.
    @Test func statisticsCountEveryConcurrentCallByToolAndOutcome() async throws {
        let statistics = ToolStatistics()
        let other = try ToolID("other:tool")
        let observe = Observability(.init(tools: .registered([search]), logger: nil, statistics: statistics), metricsFactory: TestMetrics())
        let pipeline = ToolPipeline(runner: echo) { observe.middleware }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for call in 0..<250 {
                        if call % 5 == 0 {
                            await #expect(throws: ToolFailure.self) { try await pipeline.run(ToolCall(tool: search, arguments: ["fail": true])) }
                        } else {
                            _ = try await pipeline.run(ToolCall(tool: task % 2 == 0 ? search : other))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let totals = statistics.snapshot()
        #expect(totals["github:search"] == ["ok": 800, "error": 400], "\(totals)")
        #expect(totals["unregistered"] == ["ok": 800], "\(totals)")
    }

    /// Bulkhead meters are found by store key on the call path; keys holding a tenant must not
    /// grow that map (nor the labels) without bound, and every call's slot is given back on the
    /// label it was taken on.
    @Test func bulkheadMetersStayBoundedWhenKeysComeFromTenants() async throws {
        let metrics = TestMetrics()
        let observe = Observability(.init(tools: .registered([search]), maximumPolicyLabels: 2, logger: nil), metricsFactory: metrics)
        let pipeline = try ToolPipeline(runner: echo) {
            observe.middleware
            try BulkheadMiddleware(.init(maxConcurrent: 10, key: .tenant, observer: observe.resilience))
        }
        let tenants = Observability.perCallSeriesLimit + 100
        for tenant in 0..<tenants {
            var context = ServiceContext.topLevel
            context.toolTenant = "tenant-\(tenant)"
            _ = try await pipeline.run(ToolCall(tool: search, context: context))
        }
        #expect(observe.perCallSeriesCount == Observability.perCallSeriesLimit)
        let meters = metrics.meters.filter { $0.label == "toolops_bulkhead_in_use" }
        let labels = Set(meters.compactMap { $0.dimensions.first { $0.0 == "bulkhead" }?.1 })
        #expect(labels.count == 3 && labels.contains("other"), "\(labels)")
        for meter in meters { #expect(meter.lastValue == 0, "\(meter.dimensions)") }
    }

    @Test func retriesAndTimeoutsAreCountedPerTool() async throws {
        let metrics = TestMetrics()
        let observe = Observability(.init(tools: .registered([search]), logger: nil), metricsFactory: metrics)
        let attempts = Mutex(0)
        let flaky = ToolFunction { _ in
            if attempts.withLock({ $0 += 1; return $0 }) < 3 { throw ToolFailure() }
            return ToolResult(.null)
        }
        let pipeline = try ToolPipeline(runner: flaky) {
            observe.middleware
            RetryMiddleware(.init(policy: try RetryPolicy(maxAttempts: 3, initialDelay: .milliseconds(1), retryIf: { _ in true }), observer: observe.resilience))
        }
        _ = try await pipeline.run(ToolCall(tool: search))
        #expect(try metrics.expectCounter("toolops_retries_total", [("tool", "github:search")]).totalValue == 2)

        let stuck = ToolFunction { _ in
            try await Task.sleep(for: .seconds(10))
            return ToolResult(.null)
        }
        let timed = try ToolPipeline(runner: stuck) {
            observe.middleware
            try TimeoutMiddleware(.init(timeout: .milliseconds(20), observer: observe.resilience))
        }
        await #expect(throws: ToolOpsError.self) { try await timed.run(ToolCall(tool: search)) }
        #expect(try metrics.expectCounter("toolops_timeouts_total", [("tool", "github:search")]).totalValue == 1)
        #expect(try metrics.expectCounter("toolops_tool_calls_total", [("tool", "github:search"), ("outcome", "timed_out")]).totalValue == 1)
    }
}

/// Counts the handlers a factory is asked for (forwarding to TestMetrics).
final class CountingMetricsFactory: MetricsFactory {
    let metrics = TestMetrics()
    let made = Mutex<[String: Int]>([:])

    private func count(_ label: String) { made.withLock { $0[label, default: 0] += 1 } }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        count(label)
        return metrics.makeCounter(label: label, dimensions: dimensions)
    }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        count(label)
        return metrics.makeFloatingPointCounter(label: label, dimensions: dimensions)
    }
    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        count(label)
        return metrics.makeMeter(label: label, dimensions: dimensions)
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        count(label)
        return metrics.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        count(label)
        return metrics.makeTimer(label: label, dimensions: dimensions)
    }
    func destroyCounter(_ handler: any CounterHandler) { metrics.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { metrics.destroyFloatingPointCounter(handler) }
    func destroyMeter(_ handler: any MeterHandler) { metrics.destroyMeter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { metrics.destroyRecorder(handler) }
    func destroyTimer(_ handler: any TimerHandler) { metrics.destroyTimer(handler) }
}

@Suite("Observe: metric handles")
struct ObserveMetricHandleTests {
    /// A handle is made once per name and labels and reused: making one asks the factory, which
    /// for Prometheus is a registry lookup under a lock — once per event was a tenth of a call's CPU.
    @Test func eventsReuseTheirMetricHandles() async throws {
        let factory = CountingMetricsFactory()
        let search = try ToolID("github:search")
        let observe = Observability(.init(tools: .registered([search]), logger: nil), metricsFactory: factory)
        let pipeline = try ToolPipeline(runner: echo) {
            observe.middleware
            try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: try RateLimit(rate: 1_000, burst: 1_000))], observer: observe.resilience))
            try BulkheadMiddleware(.init(maxConcurrent: 10, observer: observe.resilience))
        }
        for _ in 0..<20 { _ = try await pipeline.run(ToolCall(tool: search)) }
        let made = factory.made.withLock { $0 }
        #expect(made["toolops_ratelimit_decisions_total"] == 1, "\(made)")
        #expect(made["toolops_bulkhead_in_use"] == 1, "\(made)")
        #expect(try factory.metrics.expectCounter("toolops_ratelimit_decisions_total", [("rule", "tool:*"), ("result", "allowed")]).totalValue == 20)
    }
}
