import Synchronization
import Testing
import ToolOpsCore
@testable import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Retry", .timeLimit(.minutes(1)))
struct RetryTests {
    @Test(arguments: [RetryPolicy.Jitter.none, .full, .equal, .decorrelated])
    func delaysStayWithinZeroAndTheCap(jitter: RetryPolicy.Jitter) throws {
        for backoff in [RetryPolicy.Backoff.exponential(multiplier: 3), .linear, .constant] {
            let policy = try RetryPolicy(maxAttempts: 50, initialDelay: .milliseconds(100), maxDelay: .seconds(2), backoff: backoff, jitter: jitter)
            var rng = SystemRandomNumberGenerator()
            var previous = policy.initialDelay
            var seen = Set<Duration>()
            for k in 1...40 {
                let delay = policy.delay(retry: k, previous: previous, using: &rng)
                #expect(delay >= .zero && delay <= .seconds(2), "\(backoff) \(jitter) k=\(k): \(delay)")
                seen.insert(delay)
                previous = delay
            }
            if jitter != .none { #expect(seen.count > 10, "jitter must actually vary") }
        }
    }

    @Test func nominalBackoffWithoutJitter() throws {
        var rng = SystemRandomNumberGenerator()
        let exponential = try RetryPolicy(initialDelay: .milliseconds(100), maxDelay: .seconds(1), jitter: .none)
        #expect((1...5).map { exponential.delay(retry: $0, previous: .zero, using: &rng) }
            == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1)])
        let linear = try RetryPolicy(initialDelay: .milliseconds(100), maxDelay: .seconds(1), backoff: .linear, jitter: .none)
        #expect(linear.delay(retry: 3, previous: .zero, using: &rng) == .milliseconds(300))
        let equal = try RetryPolicy(initialDelay: .milliseconds(100), maxDelay: .seconds(1), jitter: .equal)
        for _ in 0..<100 {
            let d = equal.delay(retry: 2, previous: .zero, using: &rng)
            #expect(d >= .milliseconds(100) && d <= .milliseconds(200))
        }
    }

    @Test func retriesUntilSuccess() async throws {
        let clock = ManualClock()
        let attempts = Counter()
        let flaky = ToolFunction { _ in
            if attempts.increment() < 3 { throw Boom() }
            return ToolResult("finally")
        }
        let retry = RetryMiddleware(.init(policy: try RetryPolicy(maxAttempts: 3, jitter: .none)), clock: clock)
        let task = Task { try await retry.run(try call(), next: flaky) }
        #expect(await eventually { clock.sleeperCount == 1 })
        clock.advance(by: .milliseconds(100))
        #expect(await eventually { clock.sleeperCount == 1 && attempts.current == 2 })
        clock.advance(by: .milliseconds(200))
        #expect(try await task.value.value == "finally")
        #expect(attempts.current == 3)
    }

    @Test func exhaustionReportsAttemptsAndTheLastError() async throws {
        let attempts = Counter()
        let failing = ToolFunction { _ in throw Boom(n: attempts.increment()) }
        let retry = RetryMiddleware(.init(policy: try RetryPolicy(maxAttempts: 4, initialDelay: .zero, maxDelay: .zero)))
        let error = await #expect(throws: ToolOpsError.self) { try await retry.run(try call(), next: failing) }
        #expect(error?.code == .retriesExhausted)
        #expect(error?.attempts == 4)
        #expect(error?.underlying as? Boom == Boom(n: 4))
    }

    @Test func nonRetryableErrorsPassStraightThrough() async throws {
        let attempts = Counter()
        let retry = RetryMiddleware(.init(policy: try RetryPolicy(initialDelay: .zero, maxDelay: .zero)))
        for error in [ToolOpsError(.circuitOpen, "open"), ToolOpsError(.invalidInput, "bad")] {
            let failing = ToolFunction { _ in _ = attempts.increment(); throw error }
            // The original error, as is: not wrapped into retriesExhausted.
            let thrown = await #expect(throws: ToolOpsError.self) { try await retry.run(try call(), next: failing) }
            #expect(thrown?.code == error.code && thrown?.message == error.message)
            #expect(thrown?.attempts == nil)
        }
        let cancelled = ToolFunction { _ in _ = attempts.increment(); throw CancellationError() }
        await #expect(throws: CancellationError.self) { try await retry.run(try call(), next: cancelled) }
        #expect(attempts.current == 3)  // one attempt each
    }

    @Test func honoursRetryAfterHintsAndGivesUpOnLongOnes() async throws {
        let clock = ManualClock()
        let attempts = Counter()
        let limited = ToolFunction { _ in
            if attempts.increment() == 1 { throw ToolOpsError(.rateLimited, "wait", retryAfter: .seconds(2)) }
            return ToolResult("ok")
        }
        let retry = RetryMiddleware(.init(policy: try RetryPolicy(initialDelay: .milliseconds(10), maxDelay: .seconds(5), jitter: .none)), clock: clock)
        let task = Task { try await retry.run(try call(), next: limited) }
        #expect(await eventually { clock.sleeperCount == 1 })
        clock.advance(by: .milliseconds(1999))
        #expect(clock.sleeperCount == 1)  // still waiting for the hint, not the 10 ms back-off
        clock.advance(by: .milliseconds(1))
        #expect(try await task.value.value == "ok")

        let tooLong = ToolFunction { _ in throw ToolOpsError(.rateLimited, "wait", retryAfter: .seconds(60)) }
        let error = await #expect(throws: ToolOpsError.self) { try await retry.run(try call(), next: tooLong) }
        #expect(error?.code == .rateLimited)
    }

    @Test func cancellationStopsTheBackOffSleep() async throws {
        let clock = ManualClock()
        let retry = RetryMiddleware(.init(policy: try RetryPolicy(maxAttempts: 5)), clock: clock)
        let attempts = Counter()
        let failing = ToolFunction { _ in _ = attempts.increment(); throw Boom() }
        let task = Task { try await retry.run(try call(), next: failing) }
        #expect(await eventually { clock.sleeperCount == 1 })
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(attempts.current == 1)
    }

    @Test func budgetCapsRetries() async throws {
        let clock = ManualClock()
        let budget = try RetryBudget(ratio: 0.1, minimumPerSecond: 0, window: .seconds(10), clock: clock)
        let events = Events()
        let retry = RetryMiddleware(
            .init(policy: try RetryPolicy(maxAttempts: 2, initialDelay: .zero, maxDelay: .zero), budget: budget, observer: events.observer), clock: clock)
        let attempts = Counter()
        let failing = ToolFunction { _ in _ = attempts.increment(); throw Boom() }
        for _ in 0..<100 { _ = try? await retry.run(try call(), next: failing) }
        // 100 calls at 10 % → 10 retries: 110 attempts, not 200.
        #expect(attempts.current == 110)
        #expect(events.all.filter { if case .retryBudgetExhausted = $0 { return true } else { return false } }.count == 90)
    }

    @Test func shadowModeNeverRetries() async throws {
        let events = Events()
        let attempts = Counter()
        let failing = ToolFunction { _ in _ = attempts.increment(); throw Boom() }
        let retry = RetryMiddleware(.init(policy: try RetryPolicy(initialDelay: .zero, maxDelay: .zero), mode: .shadow, observer: events.observer))
        await #expect(throws: Boom.self) { try await retry.run(try call(), next: failing) }
        #expect(attempts.current == 1)
        #expect(events.all.count == 1)
    }

    @Test func invalidPolicies() {
        #expect(throws: ToolOpsError.self) { try RetryPolicy(maxAttempts: 0) }
        #expect(throws: ToolOpsError.self) { try RetryPolicy(initialDelay: .seconds(2), maxDelay: .seconds(1)) }
        #expect(throws: ToolOpsError.self) { try RetryPolicy(backoff: .exponential(multiplier: 0.5)) }
        #expect(throws: ToolOpsError.self) { try RetryBudget(ratio: -1) }
    }
}
