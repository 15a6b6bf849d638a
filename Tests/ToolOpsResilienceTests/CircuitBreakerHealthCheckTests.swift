import Testing
import ToolOpsCore
import ToolOpsResilience

@Suite("Circuit-breaker health check", .timeLimit(.minutes(1)))
struct CircuitBreakerHealthCheckTests {
    @Test func openBreakersMakeTheReplicaDegradedUntilTheyClose() async throws {
        let store = MemoryCircuitBreakerStore()
        let breakers = CircuitBreakerHealthCheck()
        let policy = try CircuitBreakerPolicy(failureRateThreshold: 0.5, minimumCalls: 2)
        let breaker = CircuitBreakerMiddleware(.init(policy: policy, observer: breakers.observer), store: store)
        breakers.watch(breaker)
        #expect(try await breakers.check().status == .healthy)

        try await breaker.control(.forceOpen, key: "pay:charge")
        var result = try await breakers.check()
        #expect(result.status == .degraded)
        #expect(result.details.values.contains("forced_open"))
        try await breaker.control(.reset, key: "pay:charge")
        #expect(try await breakers.check().status == .healthy)

        // Opened behind this replica's back (another replica, through the shared store): seen
        // when a call is rejected; closed behind its back: seen through the store at check time.
        let storeKey = "\(breaker.configuration.keyPrefix):\(breaker.configuration.key):pay:charge"
        _ = try await store.control(key: storeKey, .forceOpen, policy: policy)
        let tools = ToolFunction { _ in ToolResult("ok") }
        await #expect(throws: ToolOpsError.self) { try await breaker.run(ToolCall(tool: try ToolID("pay:charge")), next: tools) }
        result = try await breakers.check()
        #expect(result.status == .degraded)
        _ = try await store.control(key: storeKey, .reset, policy: policy)
        #expect(try await breakers.check().status == .healthy)
    }
}
