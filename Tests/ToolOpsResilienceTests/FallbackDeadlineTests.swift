import Synchronization
import Testing
import ToolOpsCore
import ToolOpsTestSupport
import ToolOpsTesting
@testable import ToolOpsResilience

/// A shared rate-limit store that answers with a recognisable decision, as `behaviour` says.
final class ScriptedRateLimitStore: RateLimitStore {
    let behaviour = StoreBehaviour()
    func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        try await behaviour.pass()
        return requests.map { _ in RateLimitDecision(allowed: true, limit: 4_242, remaining: 4_242, retryAfter: .zero, resetAfter: .zero) }
    }
}

/// A shared breaker store that admits as `behaviour` says (and otherwise answers "closed").
final class ScriptedCircuitBreakerStore: CircuitBreakerStore {
    let behaviour = StoreBehaviour()
    let inner = MemoryCircuitBreakerStore()
    func admit(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitAdmission {
        try await behaviour.pass()
        return try await inner.admit(key: key, policy: policy)
    }
    func record(key: String, outcome: CallOutcome, probe: Bool, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try await behaviour.pass()
        return try await inner.record(key: key, outcome: outcome, probe: probe, policy: policy)
    }
    func control(key: String, _ action: CircuitControl, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try await inner.control(key: key, action, policy: policy)
    }
    func snapshot(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitBreakerSnapshot {
        try await behaviour.pass()
        return try await inner.snapshot(key: key, policy: policy)
    }
}

/// The fallback wrappers' per-call deadline on the real clock (the shared deadline watcher):
/// a primary that stalls is given up on in time, a caller's cancellation is not an outage, and
/// an answer that arrives after the deadline stands.
@Suite("Fallback stores' deadline", .timeLimit(.minutes(1)))
struct FallbackDeadlineTests {
    let request = RateLimitRequest(key: "k", limit: try! RateLimit(rate: 10))
    let policy = try! CircuitBreakerPolicy(failureRateThreshold: 0.5, minimumCalls: 2)

    @Test func aStalledRateLimitPrimaryIsGivenUpOnAtTheDeadline() async throws {
        let primary = ScriptedRateLimitStore()
        let store = try FallbackRateLimitStore(primary: primary, deadline: .milliseconds(50), probeInterval: .seconds(30))
        #expect(try await store.acquire([request], maxWait: .zero)[0].limit == 4_242)  // from the primary
        primary.behaviour.set(.stall)
        let started = ContinuousClock.now
        let decision = try await store.acquire([request], maxWait: .zero)[0]
        let waited = ContinuousClock.now - started
        #expect(decision.allowed && decision.limit == 10)  // decided by the local fallback
        #expect(store.isDegraded)
        #expect(primary.behaviour.cancelled.isSet)  // the stalled call did not keep running
        // Given up on at the deadline (measured where the watcher cancels, not where a busy pool
        // resumes the caller), and the caller is not held much longer.
        let cancelledAfter = try #require(primary.behaviour.cancelRequested.since(started))
        #expect(cancelledAfter >= .milliseconds(50) && cancelledAfter < .seconds(1))
        #expect(waited < .seconds(10))
    }

    @Test func aStalledBreakerPrimaryIsJudgedLocally() async throws {
        let primary = ScriptedCircuitBreakerStore()
        let store = try FallbackCircuitBreakerStore(primary: primary, deadline: .milliseconds(50), probeInterval: .seconds(30))
        #expect(try await store.admit(key: "svc", policy: policy).allowed)
        primary.behaviour.set(.stall)
        let started = ContinuousClock.now
        #expect(try await store.admit(key: "svc", policy: policy).allowed)  // the local breaker is closed
        #expect(try #require(primary.behaviour.cancelRequested.since(started)) < .seconds(1))
        #expect(store.isDegraded && primary.behaviour.cancelled.isSet)
        // While degraded, outcomes go to the local breaker, which opens on its own.
        for _ in 0..<2 { _ = try await store.record(key: "svc", outcome: .failure(duration: .milliseconds(1)), probe: false, policy: policy) }
        #expect(try await store.admit(key: "svc", policy: policy).allowed == false)
        #expect(try await store.fallback.snapshot(key: "svc", policy: policy).state == .open)
    }

    @Test func cancellingTheCallerDuringAStallThrowsAndDoesNotDegrade() async throws {
        let primary = ScriptedRateLimitStore()
        primary.behaviour.set(.stall)
        let store = try FallbackRateLimitStore(primary: primary, deadline: .seconds(10), probeInterval: .seconds(30))
        let caller = Task { [request] in try await store.acquire([request], maxWait: .zero) }
        #expect(await eventually { primary.behaviour.entered.current == 1 })
        caller.cancel()
        await #expect(throws: CancellationError.self) { try await caller.value }
        #expect(primary.behaviour.cancelled.isSet)
        #expect(!store.isDegraded)  // the caller left; Redis did nothing wrong
    }

    @Test func anAnswerArrivingAfterTheDeadlineStands() async throws {
        let primary = ScriptedRateLimitStore()
        primary.behaviour.set(.late(.milliseconds(150)))
        let store = try FallbackRateLimitStore(primary: primary, deadline: .milliseconds(50), probeInterval: .seconds(30))
        let decision = try await store.acquire([request], maxWait: .zero)[0]
        #expect(decision.limit == 4_242)  // the primary's answer, not a local one
        #expect(!store.isDegraded)
    }
}
