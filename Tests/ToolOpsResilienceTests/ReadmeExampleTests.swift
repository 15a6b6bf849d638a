import Testing
import ToolOpsCore
import ToolOpsResilience

@Suite("README example", .timeLimit(.minutes(1)))
struct ReadmeExampleTests {
    /// The pipeline shown in README.md, verbatim, so the README stays true.
    @Test func readmePipelineRuns() async throws {
        let tools = ToolFunction { call in ToolResult(["echo": call.arguments]) }
        let pipeline = try ToolPipeline(runner: tools) {
            try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: try RateLimit(rate: 100), key: .tenant)]))
            RetryMiddleware(.init(policy: try RetryPolicy(maxAttempts: 3)))
            CircuitBreakerMiddleware(.init(policy: try CircuitBreakerPolicy(failureRateThreshold: 0.5)))
            try BulkheadMiddleware(.init(maxConcurrent: 10))
            try TimeoutMiddleware(.init(timeout: .seconds(30)))
        }
        let result = try await pipeline.run(ToolCall(tool: try ToolID("demo:echo"), arguments: try JSONValue(parsing: #"{"q": 1}"#)))
        #expect(result.value == ["echo": ["q": 1]])
        #expect(pipeline.middlewares.count == 5)
    }
}
