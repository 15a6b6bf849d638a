import InMemoryTracing
import Metrics
import MetricsTestKit
import Testing
import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting
import Tracing

@Suite("Redis client metrics and spans", .timeLimit(.minutes(1)))
struct RedisInstrumentationTests {
    @Test func commandsAreTimedByNameAndErrorsCountedByKind() async throws {
        try await withRedisServer { server in
            let metrics = TestMetrics()
            let client = try RedisClient(configuration: try RedisConfiguration(url: server.url), logger: quietLogger, metricsFactory: metrics)
            defer { client.shutdown() }
            try await client.send("SET", "k", "v")
            for _ in 0..<3 { _ = try await client.send("GET", "k") }
            // Redis said no: GET on a list.
            try await client.send("RPUSH", "list", "x")
            await #expect(throws: RedisClientError.self) { try await client.send("GET", "list") }
            _ = try await client.pipeline([RedisCommand("INCR", "n"), RedisCommand("INCR", "n")])

            #expect(try metrics.expectTimer("toolops_redis_command_duration_seconds", [("command", "GET")]).values.count == 4)
            #expect(try metrics.expectTimer("toolops_redis_command_duration_seconds", [("command", "SET")]).values.count == 1)
            #expect(try metrics.expectTimer("toolops_redis_command_duration_seconds", [("command", "PIPELINE")]).values.count == 1)
            #expect(try metrics.expectCounter("toolops_redis_errors_total", [("kind", "said_no")]).totalValue == 1)
            #expect(try metrics.expectCounter("toolops_redis_errors_total", [("kind", "unavailable")]).totalValue == 0)
            // One pooled connection, open now; every write carried at least one command.
            #expect(try metrics.expectMeter("toolops_redis_connections").lastValue == 1)
            let depths = try metrics.expectRecorder("toolops_redis_pipeline_depth").values
            #expect(!depths.isEmpty && depths.allSatisfy { $0 >= 1 })
            #expect(depths.contains(2))  // the pipeline of two went out in one write
            client.shutdown()
            #expect(await eventually { (try? metrics.expectMeter("toolops_redis_connections").lastValue) == 0 })
        }
    }

    @Test func anUnreachableServerCountsAsUnavailable() async throws {
        let metrics = TestMetrics()
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:1")
        configuration.connectTimeout = .milliseconds(200)
        let client = try RedisClient(configuration: configuration, logger: quietLogger, metricsFactory: metrics)
        defer { client.shutdown() }
        await #expect(throws: RedisClientError.self) { try await client.send("PING") }
        #expect(try metrics.expectCounter("toolops_redis_errors_total", [("kind", "unavailable")]).totalValue == 1)
        #expect(try metrics.expectMeter("toolops_redis_connections").lastValue ?? 0 == 0)
    }

    @Test func commandsInsideATraceAreClientSpansWithoutArguments() async throws {
        try await withRedisServer { server in
            let tracer = InMemoryTracer()
            let client = try RedisClient(
                configuration: try RedisConfiguration(url: server.url), logger: quietLogger, metricsFactory: TestMetrics(), tracer: tracer)
            defer { client.shutdown() }
            _ = try await client.send("SET", "outside", "no-span")  // no trace context: no span
            let parent = tracer.startSpan("tool.exec demo:x")
            try await ServiceContext.$current.withValue(parent.context) {
                _ = try await client.send("SET", "secret-key", "secret-value")
                await #expect(throws: RedisClientError.self) { try await client.send("INCR", "secret-key") }
            }
            parent.end()

            let spans = tracer.finishedSpans.filter { $0.operationName != "tool.exec demo:x" }
            #expect(spans.map(\.operationName) == ["SET", "INCR"])
            #expect(spans.allSatisfy { $0.kind == .client && $0.parentSpanID == parent.spanID })
            #expect(spans[0].attributes["db.system.name"]?.toSpanAttribute() == .string("redis"))
            #expect(spans[1].status?.code == .error)
            let text = "\(spans.map { "\($0.attributes)" })"
            #expect(!text.contains("secret"))
        }
    }
}
