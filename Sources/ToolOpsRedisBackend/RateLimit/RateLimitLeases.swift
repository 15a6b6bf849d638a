import ToolOpsCore
import ToolOpsResilience

/// Tokens this replica took from a shared bucket ahead of its calls, and refusals it
/// remembers — the state machine of ``RedisRateLimitStore``'s leasing, without I/O.
///
/// A bucket busy enough that a window (20 ms by default) holds several of its tokens is not
/// asked once per call: one round trip takes a batch of tokens, sized to this replica's
/// demand in the previous window (at most the tokens the rate emits in one window and a
/// quarter of the burst), and calls spend them here until the window ends; unspent tokens
/// are dropped then. Every call admitted spent a token taken from the shared bucket, so the
/// cluster never admits more than the limit (`burst + rate × elapsed`); what leasing costs is
/// admitting a little *less* near the limit (tokens dropped unspent) and remaining counts
/// that are estimates. Buckets too slow to fill a window with tokens (a 100/s limit with a
/// 20 ms window: two) are decided by Redis call by call, exactly as without leasing.
///
/// While a batch is being fetched, later calls on the same bucket wait for it instead of
/// fetching their own (`Waiter`: a continuation in the store, anything in tests). A refusal
/// is remembered until its `retryAfter`: no token can be had before then, so calls on a
/// bucket that is out of tokens are refused here, without a round trip.
struct RateLimitLeases<Waiter> {
    typealias Action = RateLimitLeaseAction
    typealias Outcome = RateLimitLeaseOutcome

    struct Configuration: Sendable {
        /// How long leased tokens may be spent; 0 turns leasing off (refusals are still remembered).
        var window: Duration = .milliseconds(20)
        /// Buckets tracked at most (keys may come from callers); beyond, calls go to Redis.
        var maximumBuckets: Int = 10_000
    }

    private struct Bucket {
        var limit: RateLimit
        var tokens = 0
        var expires = ClockInstant(nanoseconds: .min)
        /// Redis' remaining count when the batch was taken, and when the bucket is full again.
        var remaining = 0
        var resetAt = ClockInstant(nanoseconds: .min)
        var refusal: (at: ClockInstant, until: ClockInstant, cost: Int, decision: RateLimitDecision)?
        var fetching = false
        var waiters: [(waiter: Waiter, cost: Int)] = []
        /// Calls seen in the current window, and in the one before it.
        /// The fetch in flight is a refill ahead of need (``RateLimitLeases/refillsAhead``).
        var refilling = false
        /// The tokens the last fetch or refill brought.
        var lastBatch = 0
        var windowStart = ClockInstant(nanoseconds: .min)
        var demand = 0
        var previousDemand = 0

        init(limit: RateLimit) { self.limit = limit }

        var isIdle: Bool { !fetching && waiters.isEmpty }
    }

    let configuration: Configuration
    /// Whether a call that spends into the second half of a batch's tokens — or spends one in
    /// the second half of the batch's window — asks for the next batch ahead
    /// (``RateLimitLeaseAction/decidedAndRefill(_:want:)``), so that busy buckets are never
    /// empty and calls do not wait for a round trip. Set while the store's service is there to
    /// fetch refills.
    var refillsAhead = false
    private var buckets: [String: Bucket] = [:]
    /// When full of live buckets: no sweep before this (keys may come from callers; a sweep per
    /// new key would rebuild the table under the store's lock every call).
    private var nextSweep = ClockInstant(nanoseconds: .min)

    init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    /// Buckets tracked now.
    var count: Int { buckets.count }

    /// The largest batch for `limit`: the tokens one window emits and a quarter of the burst;
    /// below two tokens, no leasing.
    func maximumBatch(_ limit: RateLimit) -> Int {
        guard configuration.window > .zero else { return 1 }
        let perWindow = configuration.window.nanosecondsClamped / max(limit.emissionInterval, 1)
        return Int(min(perWindow, Int64(limit.burst / 4)))
    }

    /// The first step of a call of `cost` on `key`.
    mutating func take(_ key: String, cost: Int, limit: RateLimit, now: ClockInstant) -> Action {
        // One lookup for a known key; the bucket then changes where it lies.
        guard let index = buckets.index(forKey: key) ?? newBucket(key, limit: limit, now: now) else { return .direct }
        return Self.step(
            &buckets.values[index], cost: cost, limit: limit, now: now, window: configuration.window, batch: maximumBatch(limit),
            refillsAhead: refillsAhead)
    }

    /// Tracks a bucket for `key`, if there is room; its index.
    private mutating func newBucket(_ key: String, limit: RateLimit, now: ClockInstant) -> Dictionary<String, Bucket>.Index? {
        guard makeRoom(now: now) else { return nil }
        buckets[key] = Bucket(limit: limit)
        return buckets.index(forKey: key)
    }

    /// ``take(_:cost:limit:now:)`` on one bucket (`batch`: ``maximumBatch(_:)`` of `limit`).
    private static func step(
        _ bucket: inout Bucket, cost: Int, limit: RateLimit, now: ClockInstant, window: Duration, batch: Int, refillsAhead: Bool
    ) -> Action {
        if bucket.limit != limit {
            // Another limit on the same key (the rule changed): its tokens and refusal do not
            // apply; a fetch in flight and its waiters carry on.
            bucket.limit = limit
            bucket.tokens = 0
            bucket.refusal = nil
        }
        if now >= bucket.windowStart + window {
            // A window with no calls in between leaves a demand of zero: batches shrink when calls stop.
            bucket.previousDemand = now >= bucket.windowStart + window * 2 ? 0 : bucket.demand
            bucket.demand = 0
            bucket.windowStart = now
        }
        bucket.demand += cost
        if let refusal = bucket.refusal {
            if now < refusal.until && cost >= refusal.cost {
                var decision = refusal.decision
                decision.retryAfter = refusal.until - now
                decision.resetAfter = max(.zero, decision.resetAfter - (now - refusal.at))
                return .decided(decision)
            }
            if now >= refusal.until { bucket.refusal = nil }
        }
        if now >= bucket.expires { bucket.tokens = 0 }
        if bucket.tokens >= cost {
            bucket.tokens -= cost
            let decision = Self.allowed(bucket, now: now)
            if refillsAhead, !bucket.fetching, bucket.lastBatch >= 2,
                bucket.tokens * 2 < bucket.lastBatch || now >= bucket.expires - window / 2
            {
                bucket.fetching = true
                bucket.refilling = true
                return .decidedAndRefill(decision, want: min(batch, max(1, bucket.previousDemand, bucket.demand)))
            }
            return .decided(decision)
        }
        if batch <= cost { return .direct }
        if bucket.fetching { return .join }
        bucket.fetching = true
        return .fetch(want: min(batch, max(cost, bucket.previousDemand, bucket.demand)))
    }

    /// ``take(_:cost:limit:now:)`` when it decides at once (leased tokens, a remembered
    /// refusal) on a bucket already tracked; otherwise `nil` and nothing changed, so the
    /// caller's asynchronous path takes again.
    mutating func takeIfDecided(_ key: String, cost: Int, limit: RateLimit, now: ClockInstant) -> (decision: RateLimitDecision, refill: Int?)? {
        guard let index = buckets.index(forKey: key) else { return nil }
        var bucket = buckets.values[index]
        let action = Self.step(
            &bucket, cost: cost, limit: limit, now: now, window: configuration.window, batch: maximumBatch(limit), refillsAhead: refillsAhead)
        switch action {
        case .decided(let decision):
            buckets.values[index] = bucket
            return (decision, nil)
        case .decidedAndRefill(let decision, let want):
            buckets.values[index] = bucket
            return (decision, want)
        case .fetch, .direct, .join:
            return nil
        }
    }

    /// Queues `waiter` behind the fetch in flight for `key`; `false` if it already ended
    /// (call ``take`` again).
    mutating func wait(_ waiter: Waiter, key: String, cost: Int) -> Bool {
        guard buckets[key]?.fetching == true else { return false }
        buckets[key]?.waiters.append((waiter, cost))
        return true
    }

    /// The fetch for `key` took `taken` tokens (the fetching call's `cost` among them); Redis'
    /// bucket has `remaining` left and is full again after `resetAfter`. Returns the waiters
    /// with what they learn.
    mutating func granted(
        _ key: String, cost: Int, taken: Int, remaining: Int, resetAfter: Duration, now: ClockInstant
    ) -> (decision: RateLimitDecision, waiters: [(Waiter, Outcome)]) {
        guard var bucket = buckets[key] else {
            let decision = RateLimitDecision(allowed: true, limit: 0, remaining: remaining, retryAfter: .zero, resetAfter: resetAfter)
            return (decision, [])
        }
        bucket.fetching = false
        bucket.refilling = false
        bucket.refusal = nil
        bucket.tokens = max(0, taken - cost)
        bucket.lastBatch = taken
        bucket.expires = now + configuration.window
        bucket.remaining = remaining
        bucket.resetAt = now + resetAfter
        let decision = Self.allowed(bucket, now: now)
        let outcomes = serveWaiters(&bucket, now: now)
        buckets[key] = bucket
        return (decision, outcomes)
    }

    /// A refill asked for ahead of need brought `taken` tokens: they join those still
    /// unspent (all of them Redis' grants), for one more window, and serve the calls that ran
    /// out meanwhile.
    mutating func refilled(_ key: String, taken: Int, remaining: Int, resetAfter: Duration, now: ClockInstant) -> [(Waiter, Outcome)] {
        guard var bucket = buckets[key], bucket.refilling else { return [] }
        bucket.fetching = false
        bucket.refilling = false
        bucket.refusal = nil
        bucket.tokens = (now < bucket.expires ? bucket.tokens : 0) + taken
        bucket.lastBatch = taken
        bucket.expires = now + configuration.window
        bucket.remaining = remaining
        bucket.resetAt = now + resetAfter
        let outcomes = serveWaiters(&bucket, now: now)
        buckets[key] = bucket
        return outcomes
    }

    /// A refill that brought nothing (refused, failed, or never sent): the tokens still held
    /// stay, and calls that ran out meanwhile start over (a fetch of their own finds out why).
    mutating func refillEnded(_ key: String) -> [(Waiter, Outcome)] {
        guard var bucket = buckets[key], bucket.refilling else { return [] }
        bucket.fetching = false
        bucket.refilling = false
        let outcomes = bucket.waiters.map { ($0.waiter, Outcome.retry) }
        bucket.waiters = []
        buckets[key] = bucket
        return outcomes
    }

    /// Ends every refill in flight (the service that fetches them stopped).
    mutating func endRefills() -> [(Waiter, Outcome)] {
        let refilling = buckets.filter { $0.value.refilling }.map(\.key)
        return refilling.flatMap { refillEnded($0) }
    }

    private func serveWaiters(_ bucket: inout Bucket, now: ClockInstant) -> [(Waiter, Outcome)] {
        var outcomes: [(Waiter, Outcome)] = []
        for (waiter, waiterCost) in bucket.waiters {
            if bucket.tokens >= waiterCost {
                bucket.tokens -= waiterCost
                outcomes.append((waiter, .decided(Self.allowed(bucket, now: now))))
            } else {
                outcomes.append((waiter, .retry))
            }
        }
        bucket.waiters = []
        return outcomes
    }

    /// The fetch for `key` was refused with `decision` (no token before its `retryAfter`):
    /// remembered until then; the waiters are refused alike (those asking less start over).
    mutating func refused(_ key: String, cost: Int, decision: RateLimitDecision, now: ClockInstant) -> [(Waiter, Outcome)] {
        guard var bucket = buckets[key] else { return [] }
        bucket.fetching = false
        bucket.refilling = false
        bucket.tokens = 0
        if decision.retryAfter > .zero {
            bucket.refusal = (now, now + decision.retryAfter, cost, decision)
        }
        let outcomes = bucket.waiters.map { waiter, waiterCost in
            (waiter, waiterCost >= cost ? Outcome.decided(decision) : .retry)
        }
        bucket.waiters = []
        buckets[key] = bucket
        return outcomes
    }

    /// A call decided by Redis the usual way was refused: remembered as ``refused``.
    mutating func remember(refusal decision: RateLimitDecision, key: String, cost: Int, now: ClockInstant) {
        guard !decision.allowed, decision.retryAfter > .zero, buckets[key] != nil else { return }
        buckets[key]?.refusal = (now, now + decision.retryAfter, cost, decision)
    }

    /// The fetch for `key` failed: its waiters fail with the same error, or start over when
    /// the failure was the fetching call's own (`retry`: it was cancelled).
    mutating func failed(_ key: String, error: any Error, retry: Bool) -> [(Waiter, Outcome)] {
        guard var bucket = buckets[key] else { return [] }
        bucket.fetching = false
        bucket.refilling = false
        let outcomes = bucket.waiters.map { ($0.waiter, retry ? Outcome.retry : .failed(error)) }
        bucket.waiters = []
        buckets[key] = bucket
        return outcomes
    }

    private static func allowed(_ bucket: Bucket, now: ClockInstant) -> RateLimitDecision {
        RateLimitDecision(
            allowed: true, limit: bucket.limit.burst, remaining: bucket.remaining + bucket.tokens,
            retryAfter: .zero, resetAfter: max(.zero, bucket.resetAt - now))
    }

    /// Room for one more bucket: drops idle buckets whose tokens and refusal have expired
    /// when full. `false` if there is still none.
    private mutating func makeRoom(now: ClockInstant) -> Bool {
        if buckets.count < configuration.maximumBuckets { return true }
        guard now >= nextSweep else { return false }
        buckets = buckets.filter { _, bucket in
            !bucket.isIdle || now < bucket.expires || (bucket.refusal.map { now < $0.until } ?? false)
        }
        if buckets.count >= configuration.maximumBuckets { nextSweep = now + max(configuration.window, .milliseconds(1)) }
        return buckets.count < configuration.maximumBuckets
    }
}

/// What a call should do next (see ``RateLimitLeases``).
enum RateLimitLeaseAction {
    /// Decided here.
    case decided(RateLimitDecision)
    /// Decided here, and the caller asks the store's service for the next batch of `want`
    /// tokens ahead of need: report with `refilled` or `refillEnded` (the bucket counts as
    /// fetching until then).
    case decidedAndRefill(RateLimitDecision, want: Int)
    /// Fetch `want` tokens with the lease script; report with `granted` or `refused`.
    case fetch(want: Int)
    /// Ask Redis the usual way (no leasing for this bucket).
    case direct
    /// A fetch for this bucket is in flight: wait for it with `wait(_:key:cost:)`.
    case join
}

/// What a waiting call learns when the fetch it waited for ends.
enum RateLimitLeaseOutcome: Sendable {
    case decided(RateLimitDecision)
    /// The batch ran out before this waiter's turn: start over with `take`.
    case retry
    /// The fetch failed with this error.
    case failed(any Error)
}
