import Synchronization
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

    @Test func trackingIsBoundedAndAFreedSlotIsReused() async throws {
        let check = CircuitBreakerHealthCheck(maximumTracked: 3)
        let tool = try ToolID("t:x")
        for index in 0..<5 { check.observe(.circuitStateChanged(key: "cb:\(index)", from: .closed, to: .open)) }
        var result = try await check.check()
        #expect(result.status == .degraded)
        #expect(result.details.keys.sorted() == ["cb:0", "cb:1", "cb:2"])  // the first three; no more memory
        check.observe(.circuitStateChanged(key: "cb:0", from: .open, to: .closed))
        check.observe(.circuitRejected(tool: tool, key: "cb:4", retryAfter: .seconds(1), shadow: false))
        result = try await check.check()
        #expect(result.details.keys.sorted() == ["cb:1", "cb:2", "cb:4"])
        for key in ["cb:1", "cb:2", "cb:4"] { check.observe(.circuitStateChanged(key: key, from: .open, to: .closed)) }
        #expect(try await check.check().status == .healthy)
    }

    @Test func severalFallbackStoresInOneCheck() async throws {
        let limitsPrimary = FlakyRateLimitStore()
        let limits = try FallbackRateLimitStore(primary: limitsPrimary, mode: .local(scale: 0.5), name: "rate-limit")
        let breakers = try FallbackCircuitBreakerStore(primary: MemoryCircuitBreakerStore(), mode: .failOpen, name: "circuit-breaker")
        let bulkheads = try FallbackBulkheadStore(primary: DownBulkheadStore(), mode: .failClosed, name: "bulkhead")
        let check = FallbackStoresHealthCheck([limits, breakers, bulkheads])
        #expect(try await check.check().status == .healthy)
        limitsPrimary.down.withLock { $0 = true }
        _ = try await limits.acquire([RateLimitRequest(key: "k", limit: try RateLimit(rate: 10))], maxWait: .zero)
        await #expect(throws: ToolOpsError.self) { try await bulkheads.acquire(key: "k", limit: 1, lease: .seconds(1), maxWait: .zero) }
        let result = try await check.check()
        #expect(result.status == .degraded)
        #expect(result.details == ["rate-limit": "local(scale: 0.5)", "bulkhead": "fail-closed"])
        #expect(result.message == "on fallback: bulkhead, rate-limit")
    }
}

/// A shared bulkhead store that is always unreachable.
struct DownBulkheadStore: BulkheadStore {
    func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        throw ToolOpsError(.storeUnavailable, "down")
    }
    func release(_ permit: BulkheadPermit) async {}
}
