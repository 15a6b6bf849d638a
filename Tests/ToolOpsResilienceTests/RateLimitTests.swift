import Testing
import ToolOpsCore
import ToolOpsTesting
@testable import ToolOpsResilience

@Suite("Rate limiting (GCRA)", .timeLimit(.minutes(1)))
struct RateLimitTests {
    let clock = ManualClock()

    @Test func burstThenSteadyRate() throws {
        let store = MemoryRateLimitStore(clock: clock)
        let limit = try RateLimit(rate: 10, per: .seconds(1), burst: 3)
        let request = RateLimitRequest(key: "k", limit: limit)
        let first = store.decide([request], maxWait: .zero)[0]
        #expect(first.allowed && first.remaining == 2 && first.limit == 3)
        #expect(first.resetAfter == .milliseconds(100))
        #expect(store.decide([request], maxWait: .zero)[0].remaining == 1)
        #expect(store.decide([request], maxWait: .zero)[0].remaining == 0)
        let refused = store.decide([request], maxWait: .zero)[0]
        #expect(!refused.allowed)
        #expect(refused.retryAfter == .milliseconds(100))
        #expect(refused.resetAfter == .milliseconds(300))
        clock.advance(by: .milliseconds(100))
        #expect(store.decide([request], maxWait: .zero)[0].allowed)
        #expect(!store.decide([request], maxWait: .zero)[0].allowed)
        // Over a long run, allowed = burst + rate × time.
        var allowed = 0
        for _ in 0..<1000 {
            clock.advance(by: .milliseconds(10))
            if store.decide([request], maxWait: .zero)[0].allowed { allowed += 1 }
        }
        #expect(allowed == 100)  // 10 s at 10/s (the bucket was empty at the start)
    }

    @Test func weightedCost() throws {
        let store = MemoryRateLimitStore(clock: clock)
        let limit = try RateLimit(rate: 10, burst: 10)
        #expect(store.decide([RateLimitRequest(key: "k", cost: 7, limit: limit)], maxWait: .zero)[0].remaining == 3)
        let refused = store.decide([RateLimitRequest(key: "k", cost: 5, limit: limit)], maxWait: .zero)[0]
        #expect(!refused.allowed && refused.remaining == 3 && refused.retryAfter == .milliseconds(200))
    }

    @Test func batchesAreAllOrNothing() throws {
        let store = MemoryRateLimitStore(clock: clock)
        let roomy = try RateLimit(rate: 100, burst: 100)
        let tight = try RateLimit(rate: 1, burst: 1)
        let batch = [RateLimitRequest(key: "tool", limit: roomy), RateLimitRequest(key: "tenant", limit: tight)]
        #expect(store.decide(batch, maxWait: .zero).allSatisfy { $0.allowed })
        let refused = store.decide(batch, maxWait: .zero)
        #expect(refused[0].allowed == false && refused[1].allowed == false)
        // The refused batch took nothing from the roomy bucket.
        #expect(store.decide([RateLimitRequest(key: "tool", limit: roomy)], maxWait: .zero)[0].remaining == 98)
    }

    @Test func waitingReservesSlotsInArrivalOrder() throws {
        let store = MemoryRateLimitStore(clock: clock)
        let limit = try RateLimit(rate: 10, burst: 1)
        let request = RateLimitRequest(key: "k", limit: limit)
        #expect(store.decide([request], maxWait: .seconds(1))[0].wait == .zero)
        let waits = (0..<3).map { _ in store.decide([request], maxWait: .seconds(1))[0] }
        #expect(waits.map(\.allowed) == [true, true, true])
        #expect(waits.map(\.wait) == [.milliseconds(100), .milliseconds(200), .milliseconds(300)])
        // Beyond the maximum wait: refused, and nothing reserved.
        let tooLong = store.decide([request], maxWait: .milliseconds(350))[0]
        #expect(!tooLong.allowed && tooLong.retryAfter == .milliseconds(400))
    }

    @Test func invalidLimitsAreRejected() {
        #expect(throws: ToolOpsError.self) { try RateLimit(rate: 0) }
        #expect(throws: ToolOpsError.self) { try RateLimit(rate: -5) }
        #expect(throws: ToolOpsError.self) { try RateLimit(rate: 1, per: .zero) }
        #expect(throws: ToolOpsError.self) { try RateLimit(rate: 1, burst: 0) }
        #expect(throws: ToolOpsError.self) { try RateLimitMiddleware(.init(rules: [])) }
    }

    @Test func rulesBySpecificityAndScope() async throws {
        let store = MemoryRateLimitStore(clock: clock)
        let limiter = try RateLimitMiddleware(
            .init(rules: [
                RateLimitRule(try ToolPattern("github:*"), limit: try RateLimit(rate: 5), key: .tool),
                RateLimitRule(try ToolPattern("github:search"), limit: try RateLimit(rate: 1), key: .tool),
                RateLimitRule(limit: try RateLimit(rate: 2), key: .tenant),
            ]), store: store, clock: clock)
        let search = try call("github:search", tenant: "acme")
        let requests = try limiter.requests(for: search)
        #expect(requests.count == 2)  // most specific tool rule + the tenant rule
        #expect(requests[0].limit.rate == 1)
        #expect(requests[0].key == "rl:tool:github:search:github:search")
        #expect(requests[1].key == "rl:tenant:*:acme")
        _ = try await limiter.run(search, next: ok)
        let error = await #expect(throws: ToolOpsError.self) { try await limiter.run(search, next: ok) }
        #expect(error?.code == .rateLimited)
        #expect(error?.retryAfter == .seconds(1))
        // Another tenant and tool: its own buckets, so only its tenant limit (2) applies.
        let other = try call("github:issues", tenant: "globex")
        _ = try await limiter.run(other, next: ok)
        _ = try await limiter.run(other, next: ok)
        await #expect(throws: ToolOpsError.self) { try await limiter.run(other, next: ok) }
    }

    @Test func aRefusalNamesTheBindingLimit() async throws {
        let limiter = try RateLimitMiddleware(
            .init(rules: [
                RateLimitRule(limit: try RateLimit(rate: 1000), key: .tool),
                RateLimitRule(limit: try RateLimit(rate: 1, burst: 1), key: .tenant),
            ]), store: MemoryRateLimitStore(clock: clock), clock: clock)
        _ = try await limiter.run(try call(tenant: "acme"), next: ok)
        let error = await #expect(throws: ToolOpsError.self) { try await limiter.run(try call(tenant: "acme"), next: ok) }
        #expect(error?.message.contains("rl:tenant") == true, "\(error?.message ?? "")")
        #expect(error?.retryAfter == .seconds(1))
    }

    @Test func costAboveBurstIsInvalidInput() async throws {
        let limiter = try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: try RateLimit(rate: 5))], cost: { _ in 6 }))
        let error = await #expect(throws: ToolOpsError.self) { try await limiter.run(try call(), next: ok) }
        #expect(error?.code == .invalidInput)
    }

    @Test func shadowModeReportsButNeverBlocks() async throws {
        let events = Events()
        let limiter = try RateLimitMiddleware(
            .init(rules: [RateLimitRule(limit: try RateLimit(rate: 1))], mode: .shadow, observer: events.observer),
            store: MemoryRateLimitStore(clock: clock), clock: clock)
        for _ in 0..<5 { #expect(try await limiter.run(try call(), next: ok).value == "ok") }
        let refusals = events.all.filter { if case .rateLimited(_, _, _, true) = $0 { return true } else { return false } }
        #expect(refusals.count == 4)
    }

    @Test func boundedWaitSleepsOnTheClock() async throws {
        let limiter = try RateLimitMiddleware(
            .init(rules: [RateLimitRule(limit: try RateLimit(rate: 10, burst: 1))], maxWait: .seconds(1)),
            store: MemoryRateLimitStore(clock: clock), clock: clock)
        _ = try await limiter.run(try call(), next: ok)
        let waiting = Task { try await limiter.run(try call(), next: ok) }
        #expect(await eventually { clock.sleeperCount == 1 })
        clock.advance(by: .milliseconds(100))
        #expect(try await waiting.value.value == "ok")
    }
}
