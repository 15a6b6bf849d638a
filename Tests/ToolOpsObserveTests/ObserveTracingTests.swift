import InMemoryTracing
import Testing
import ToolOpsCache
import ToolOpsCore
import ToolOpsObserve
import ToolOpsResilience
import Synchronization
import Tracing

@Suite("Observe: spans")
struct ObserveTracingTests {
    let search = try! ToolID("github:search")

    @Test func eachCallIsOneSpanUnderTheCallersTrace() async throws {
        let tracer = InMemoryTracer()
        let observe = Observability(.init(tools: .registered([search]), tracer: tracer, logger: nil))
        let pipeline = ToolPipeline(runner: echo) { observe.middleware }

        // The caller's own span (as the HTTP layer would continue a traceparent).
        let parent = tracer.startSpan("http.request")
        var context = parent.context
        context.toolTenant = "acme"
        context.toolIdentity = "user-42"
        let call = ToolCall(id: "call-1", tool: search, tags: ["read", "net"], context: context)
        _ = try await pipeline.run(call)
        parent.end()

        let span = try #require(tracer.finishedSpans.first { $0.operationName == "tool.exec github:search" })
        #expect(span.kind == .internal)
        #expect(span.traceID == parent.traceID)
        #expect(span.parentSpanID == parent.spanID)
        #expect(span.attributes["toolops.tool.id"]?.toSpanAttribute() == .string("github:search"))
        #expect(span.attributes["toolops.tool.namespace"]?.toSpanAttribute() == .string("github"))
        #expect(span.attributes["toolops.tool.name"]?.toSpanAttribute() == .string("search"))
        #expect(span.attributes["toolops.tool.tags"]?.toSpanAttribute() == .stringArray(["net", "read"]))
        #expect(span.attributes["toolops.call.id"]?.toSpanAttribute() == .string("call-1"))
        #expect(span.attributes["toolops.tenant"]?.toSpanAttribute() == .string("acme"))
        #expect(span.attributes["enduser.id"]?.toSpanAttribute() == .string("user-42"))
        #expect(span.attributes["toolops.outcome"]?.toSpanAttribute() == .string("ok"))
        #expect(span.errors.isEmpty)
        #expect(span.status == nil)
    }

    @Test func aFailedCallRecordsItsErrorAndStatus() async throws {
        let tracer = InMemoryTracer()
        let observe = Observability(.init(tracer: tracer, logger: nil))
        let pipeline = ToolPipeline(runner: echo) { observe.middleware }
        await #expect(throws: ToolFailure.self) { try await pipeline.run(ToolCall(tool: search, arguments: ["fail": true])) }

        let span = try #require(tracer.finishedSpans.first)
        #expect(span.errors.count == 1)
        #expect(span.errors.first?.error is ToolFailure)
        #expect(span.status?.code == .error)
        #expect(span.attributes["toolops.outcome"]?.toSpanAttribute() == .string("error"))
        #expect(span.parentSpanID == nil)  // no trace context on the call: a new trace
    }

    @Test func policiesAddTheirDecisionsAsSpanEvents() async throws {
        let tracer = InMemoryTracer()
        let observe = Observability(.init(tracer: tracer, logger: nil))
        let cache = try CacheMiddleware(.init(policy: try CachePolicy(defaultTTL: .seconds(60)), observer: observe.cache), store: MemoryCacheStore())
        let failures = CallCounter()
        let flaky = ToolFunction { _ in
            if failures.increment() == 1 { throw ToolFailure() }
            return ToolResult(["ok": true])
        }
        let pipeline = try ToolPipeline(runner: flaky) {
            observe.middleware
            try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: try RateLimit(rate: 100))], observer: observe.resilience))
            cache
            RetryMiddleware(.init(policy: try RetryPolicy(maxAttempts: 2, initialDelay: .milliseconds(1), retryIf: { _ in true }), observer: observe.resilience))
        }
        _ = try await pipeline.run(ToolCall(tool: search, arguments: ["q": "a"]))
        _ = try await pipeline.run(ToolCall(tool: search, arguments: ["q": "a"]))

        let spans = tracer.finishedSpans
        #expect(spans.count == 2)
        let first = spans[0].events.map(\.name)
        #expect(first == ["ratelimit.decision", "cache.miss", "retry"])
        #expect(spans[0].events[2].attributes["toolops.retry.attempt"]?.toSpanAttribute() == .int64(2))
        #expect(spans[1].events.map(\.name) == ["ratelimit.decision", "cache.hit"])
        #expect(spans[1].attributes["toolops.outcome"]?.toSpanAttribute() == .string("cached"))
    }

    @Test func eventsOutsideAnObservedCallGoNowhere() {
        // No observing middleware: the helper finds no span and does nothing.
        ToolSpan.addEvent("orphan")
        #expect(ToolSpan.current == nil)
    }
}

/// A thread-safe counter (the test target has no other).
final class CallCounter: Sendable {
    private let value = Mutex(0)
    func increment() -> Int { value.withLock { $0 += 1; return $0 } }
}
