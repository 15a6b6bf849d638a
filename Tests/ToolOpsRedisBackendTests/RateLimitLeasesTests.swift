import Testing
import ToolOpsCore
import ToolOpsResilience

@testable import ToolOpsRedisBackend

/// The leasing state machine, without Redis: which calls are decided here, which fetch a
/// batch and how big, which wait for a fetch in flight.
@Suite("Rate-limit leases")
struct RateLimitLeasesTests {
    typealias Leases = RateLimitLeases<String>
    let start = ClockInstant(nanoseconds: 1_000_000_000)

    func at(_ milliseconds: Int) -> ClockInstant { start + .milliseconds(milliseconds) }

    func isDirect(_ action: RateLimitLeaseAction) -> Bool { if case .direct = action { true } else { false } }
    func isJoin(_ action: RateLimitLeaseAction) -> Bool { if case .join = action { true } else { false } }
    func wanted(_ action: RateLimitLeaseAction) -> Int? { if case .fetch(let want) = action { want } else { nil } }
    func decided(_ action: RateLimitLeaseAction) -> RateLimitDecision? { if case .decided(let d) = action { d } else { nil } }
    func refill(_ action: RateLimitLeaseAction) -> (decision: RateLimitDecision, want: Int)? {
        if case .decidedAndRefill(let d, let want) = action { (d, want) } else { nil }
    }
    func isRetry(_ outcome: RateLimitLeaseOutcome) -> Bool { if case .retry = outcome { true } else { false } }
    func isAllowed(_ outcome: RateLimitLeaseOutcome) -> Bool { if case .decided(let d) = outcome { d.allowed } else { false } }

    /// Leases with refills ahead on, and `key` holding a batch of `batch` tokens granted at `now`.
    func refilling(_ key: String, batch: Int, limit: RateLimit, now: ClockInstant) -> Leases {
        var leases = Leases()
        leases.refillsAhead = true
        _ = leases.take(key, cost: 1, limit: limit, now: now)
        _ = leases.granted(key, cost: 1, taken: batch, remaining: 900, resetAfter: .zero, now: now)
        return leases
    }

    @Test func slowBucketsAreDecidedByRedisCallByCall() throws {
        var leases = Leases()
        // 100/s: two tokens per 20 ms window, but a burst of 4 allows batches of one only.
        let slow = try RateLimit(rate: 100, burst: 4)
        // 10/s: not even one token per window.
        let slower = try RateLimit(rate: 10, burst: 100)
        for i in 0..<5 {
            let step1 = leases.take("a", cost: 1, limit: slow, now: at(i))
            #expect(isDirect(step1))
            let step2 = leases.take("b", cost: 1, limit: slower, now: at(i))
            #expect(isDirect(step2))
        }
        #expect(Leases(configuration: .init(window: .zero)).maximumBatch(try RateLimit(rate: 1_000_000)) == 1, "window 0: leasing off")
    }

    @Test func batchesFollowLastWindowsDemandUpToTheWindowsTokensAndAQuarterOfTheBurst() throws {
        var leases = Leases()
        let limit = try RateLimit(rate: 10_000, burst: 10_000)  // 200 tokens per 20 ms window
        #expect(leases.maximumBatch(limit) == 200)
        #expect(leases.maximumBatch(try RateLimit(rate: 10_000, burst: 100)) == 25)
        // First call: no demand known yet, a batch of one.
        let step3 = leases.take("k", cost: 1, limit: limit, now: at(0))
        #expect(wanted(step3) == 1)
        _ = leases.granted("k", cost: 1, taken: 1, remaining: 9_999, resetAfter: .microseconds(100), now: at(0))
        // 49 more calls in this window: each fetches what the window has seen so far.
        var lastWant = 0
        for _ in 0..<49 {
            let action = leases.take("k", cost: 1, limit: limit, now: at(1))
            lastWant = try #require(wanted(action))
            _ = leases.granted("k", cost: 1, taken: 1, remaining: 9_000, resetAfter: .zero, now: at(1))
        }
        #expect(lastWant == 50)
        // Next window: the last one's demand (50) is the batch.
        let step4 = leases.take("k", cost: 1, limit: limit, now: at(25))
        #expect(wanted(step4) == 50)
        // A quiet window in between forgets the demand.
        _ = leases.granted("k", cost: 1, taken: 1, remaining: 9_000, resetAfter: .zero, now: at(25))
        let step5 = leases.take("k", cost: 1, limit: limit, now: at(100))
        #expect(wanted(step5) == 1)
    }

    @Test func leasedTokensAreSpentHereUntilTheWindowEnds() throws {
        var leases = Leases()
        let limit = try RateLimit(rate: 10_000, burst: 1_000)
        let step6 = leases.take("k", cost: 1, limit: limit, now: at(0))
        #expect(wanted(step6) != nil)
        let first = leases.granted("k", cost: 1, taken: 5, remaining: 900, resetAfter: .milliseconds(10), now: at(0))
        #expect(first.decision.allowed && first.decision.remaining == 904, "Redis' remaining plus the 4 tokens held here")
        for i in 0..<4 {
            let step7 = leases.take("k", cost: 1, limit: limit, now: at(1))
            let decision = try #require(decided(step7))
            #expect(decision.allowed && decision.remaining == 900 + 3 - i)
            #expect(decision.resetAfter == .milliseconds(9))
        }
        // Spent: the next call fetches.
        let step8 = leases.take("k", cost: 1, limit: limit, now: at(2))
        #expect(wanted(step8) != nil)
        _ = leases.granted("k", cost: 1, taken: 3, remaining: 900, resetAfter: .zero, now: at(2))
        // Two tokens left, but the window has ended: dropped, not spent.
        let step9 = leases.take("k", cost: 1, limit: limit, now: at(23))
        #expect(wanted(step9) != nil)
    }

    @Test func callsArrivingDuringAFetchWaitForItAndShareTheBatch() throws {
        var leases = Leases()
        let limit = try RateLimit(rate: 10_000, burst: 1_000)
        let step10 = leases.take("k", cost: 1, limit: limit, now: at(0))
        #expect(wanted(step10) != nil)
        for name in ["w1", "w2", "w3"] {
            let step11 = leases.take("k", cost: 1, limit: limit, now: at(0))
            #expect(isJoin(step11))
            let step12 = leases.wait(name, key: "k", cost: 1)
            #expect(step12)
        }
        let (decision, waiters) = leases.granted("k", cost: 1, taken: 3, remaining: 500, resetAfter: .zero, now: at(1))
        #expect(decision.allowed)
        let outcomes = Dictionary(uniqueKeysWithValues: waiters.map { name, outcome in
            (name, { if case .decided(let d) = outcome { d.allowed ? "allowed" : "refused" } else if case .retry = outcome { "retry" } else { "failed" } }())
        })
        #expect(outcomes == ["w1": "allowed", "w2": "allowed", "w3": "retry"], "three tokens: the fetcher's and two waiters'")
        // With no fetch in flight, a waiter is not queued (it starts over).
        let step13 = leases.wait("late", key: "k", cost: 1)
        #expect(!step13)
    }

    @Test func aFailedFetchFailsItsWaitersUnlessTheFetcherWasCancelled() throws {
        struct Down: Error {}
        var leases = Leases()
        let limit = try RateLimit(rate: 10_000, burst: 1_000)
        _ = leases.take("k", cost: 1, limit: limit, now: at(0))
        _ = leases.take("k", cost: 1, limit: limit, now: at(0))
        let step14 = leases.wait("w", key: "k", cost: 1)
        #expect(step14)
        let failed = leases.failed("k", error: Down(), retry: false)
        #expect(failed.count == 1 && { if case .failed(let e) = failed[0].1 { e is Down } else { false } }())
        // The next call may fetch again.
        let step15 = leases.take("k", cost: 1, limit: limit, now: at(1))
        #expect(wanted(step15) != nil)
        let step16 = leases.take("k", cost: 1, limit: limit, now: at(1))
        #expect(isJoin(step16))
        let step17 = leases.wait("w2", key: "k", cost: 1)
        #expect(step17)
        let cancelled = leases.failed("k", error: CancellationError(), retry: true)
        #expect(cancelled.count == 1 && { if case .retry = cancelled[0].1 { true } else { false } }())
    }

    @Test func aRefusalIsRememberedUntilItsRetryAfter() throws {
        var leases = Leases()
        let limit = try RateLimit(rate: 10_000, burst: 1_000)
        _ = leases.take("k", cost: 1, limit: limit, now: at(0))
        let step18 = leases.take("k", cost: 1, limit: limit, now: at(0))
        #expect(isJoin(step18))
        let step19 = leases.wait("w", key: "k", cost: 1)
        #expect(step19)
        let refusal = RateLimitDecision(allowed: false, limit: 1_000, remaining: 0, retryAfter: .milliseconds(5), resetAfter: .milliseconds(100))
        let waiters = leases.refused("k", cost: 1, decision: refusal, now: at(0))
        #expect(waiters.count == 1 && { if case .decided(let d) = waiters[0].1 { !d.allowed } else { false } }())
        // Refused here, with what is left of the wait, until it is over.
        let step20 = leases.take("k", cost: 1, limit: limit, now: at(2))
        let remembered = try #require(decided(step20))
        #expect(!remembered.allowed && remembered.retryAfter == .milliseconds(3) && remembered.resetAfter == .milliseconds(98))
        let step21 = leases.take("k", cost: 1, limit: limit, now: at(5))
        #expect(wanted(step21) != nil, "after retryAfter: Redis is asked again")

        // Slow buckets too: a refusal Redis gave call by call is remembered.
        let slow = try RateLimit(rate: 1, burst: 1)
        let step22 = leases.take("s", cost: 1, limit: slow, now: at(0))
        #expect(isDirect(step22))
        leases.remember(refusal: refusal, key: "s", cost: 2, now: at(0))
        let step23 = leases.take("s", cost: 1, limit: slow, now: at(1))
        #expect(isDirect(step23), "a cheaper call may still fit")
        let step24 = leases.take("s", cost: 2, limit: slow, now: at(1))
        #expect(decided(step24)?.allowed == false)
    }

    /// With the store's service running, the call that spends into the second half of a batch
    /// also asks for the next one; calls keep spending what is left meanwhile, and only those
    /// that find nothing left wait — for that refill, not a fetch of their own.
    @Test func theNextBatchIsAskedForWhenHalfIsLeft() throws {
        let limit = try RateLimit(rate: 10_000, burst: 1_000)  // batches of up to 50
        var leases = refilling("k", batch: 8, limit: limit, now: at(0))  // 7 left after the fetcher's
        for _ in 0..<3 {
            let step = leases.take("k", cost: 1, limit: limit, now: at(1))
            #expect(decided(step)?.allowed == true)
        }
        // 4 → 3 left: under half of 8.
        let step1 = leases.take("k", cost: 1, limit: limit, now: at(1))
        let asking = try #require(refill(step1))
        #expect(asking.decision.allowed)
        #expect(asking.want == 5, "this window's demand so far")
        for _ in 0..<3 {
            let step = leases.take("k", cost: 1, limit: limit, now: at(1))
            #expect(decided(step)?.allowed == true, "the last tokens are spent, no second refill")
        }
        let empty = leases.take("k", cost: 1, limit: limit, now: at(1))
        #expect(isJoin(empty), "nothing left: wait for the refill in flight")
        let step2 = leases.wait("w", key: "k", cost: 1)
        #expect(step2)
        let waiters = leases.refilled("k", taken: 8, remaining: 800, resetAfter: .zero, now: at(2))
        #expect(waiters.count == 1 && isAllowed(waiters[0].1))
        for _ in 0..<3 {
            let step = leases.take("k", cost: 1, limit: limit, now: at(3))
            #expect(decided(step)?.allowed == true, "the refill's tokens, less the waiter's")
        }
    }

    /// A batch barely spent is refilled in the second half of its window (its tokens would be
    /// dropped at the end of it); what was left joins the refill for one more window.
    @Test func unspentTokensJoinARefillAskedForLateInTheWindow() throws {
        let limit = try RateLimit(rate: 10_000, burst: 1_000)
        var leases = refilling("k", batch: 40, limit: limit, now: at(0))
        let early = leases.take("k", cost: 1, limit: limit, now: at(5))
        #expect(decided(early)?.allowed == true)
        let step1 = leases.take("k", cost: 1, limit: limit, now: at(12))
        let late = try #require(refill(step1))
        #expect(late.decision.allowed)
        let step2 = leases.refilled("k", taken: 10, remaining: 800, resetAfter: .zero, now: at(13))
        #expect(step2.isEmpty)
        // 37 left + 10 new, good until 33 ms: 47 calls decided here, the 48th is not.
        for _ in 0..<47 {
            let step = leases.take("k", cost: 1, limit: limit, now: at(30))
            #expect(decided(step)?.allowed == true || refill(step)?.decision.allowed == true)
        }
        let spent = leases.take("k", cost: 1, limit: limit, now: at(30))
        #expect(decided(spent) == nil && refill(spent) == nil)
    }

    /// Without the service nothing is asked ahead; a refill that brings nothing (refused,
    /// failed) keeps the tokens held and sends its waiters to fetch their own.
    @Test func refillsNeedTheServiceAndAFailedOneKeepsTheTokens() throws {
        let limit = try RateLimit(rate: 10_000, burst: 1_000)
        var off = refilling("k", batch: 8, limit: limit, now: at(0))
        off.refillsAhead = false
        for _ in 0..<7 {
            let step = off.take("k", cost: 1, limit: limit, now: at(1))
            #expect(decided(step)?.allowed == true)
        }
        let step1 = off.take("k", cost: 1, limit: limit, now: at(1))
        #expect(wanted(step1) != nil, "spent: the caller fetches")

        var leases = refilling("k", batch: 8, limit: limit, now: at(0))
        for _ in 0..<3 { _ = leases.take("k", cost: 1, limit: limit, now: at(1)) }
        let step2 = leases.take("k", cost: 1, limit: limit, now: at(1))
        #expect(refill(step2) != nil)
        let step3 = leases.refillEnded("k")
        #expect(step3.isEmpty)
        let kept = leases.take("k", cost: 1, limit: limit, now: at(1))
        #expect(refill(kept)?.decision.allowed == true, "a token held is spent, and another refill asked for")
        for _ in 0..<2 { _ = leases.take("k", cost: 1, limit: limit, now: at(1)) }
        let step4 = leases.take("k", cost: 1, limit: limit, now: at(1))
        #expect(isJoin(step4))
        let step5 = leases.wait("w", key: "k", cost: 1)
        #expect(step5)
        let ended = leases.endRefills()
        #expect(ended.count == 1 && isRetry(ended[0].1), "the service stopped: the waiter starts over")
        let step6 = leases.take("k", cost: 1, limit: limit, now: at(1))
        #expect(wanted(step6) != nil)
    }

    @Test func bucketsAreBoundedAndIdleOnesMakeRoom() throws {
        var leases = Leases(configuration: .init(window: .milliseconds(20), maximumBuckets: 3))
        let limit = try RateLimit(rate: 10_000, burst: 1_000)
        for key in ["a", "b", "c"] {
            _ = leases.take(key, cost: 1, limit: limit, now: at(0))
            _ = leases.granted(key, cost: 1, taken: 10, remaining: 0, resetAfter: .zero, now: at(0))
        }
        // Full, each holding tokens: a fourth key goes to Redis untracked.
        let step25 = leases.take("d", cost: 1, limit: limit, now: at(1))
        #expect(isDirect(step25))
        #expect(leases.count == 3)
        // Their windows over, they make room.
        let step26 = leases.take("d", cost: 1, limit: limit, now: at(30))
        #expect(wanted(step26) != nil)
        #expect(leases.count == 1)
    }
}
