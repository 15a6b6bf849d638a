import Synchronization
import ToolOpsCore

/// A token-bucket limit: `rate` tokens per `period`, at most `burst` at once.
///
/// ```swift
/// let limit = try RateLimit(rate: 100, per: .seconds(1), burst: 20)
/// ```
public struct RateLimit: Sendable, Hashable, CustomStringConvertible {
    public let rate: Int
    public let period: Duration
    /// Bucket size: how many tokens can be spent at once after a quiet period.
    public let burst: Int

    /// - Parameters:
    ///   - rate: tokens added per `period`; must be positive.
    ///   - period: defaults to one second; must be positive.
    ///   - burst: bucket capacity; defaults to `rate` (one period's worth); must be ≥ 1.
    public init(rate: Int, per period: Duration = .seconds(1), burst: Int? = nil) throws(ToolOpsError) {
        try requireConfiguration(rate > 0, "rate must be positive, got \(rate)")
        try requireConfiguration(period > .zero, "period must be positive, got \(period)")
        let burst = burst ?? rate
        try requireConfiguration(burst >= 1, "burst must be at least 1, got \(burst)")
        let interval = period.nanosecondsClamped / Int64(rate)
        try requireConfiguration(interval >= 1, "rate \(rate) per \(period) is finer than one token per nanosecond")
        self.rate = rate
        self.period = period
        self.burst = burst
    }

    /// Time to earn one token, in nanoseconds (GCRA's emission interval).
    public var emissionInterval: Int64 { period.nanosecondsClamped / Int64(rate) }

    public var description: String { "\(rate)/\(period) burst \(burst)" }
}

/// The answer to "may this call spend `cost` tokens?", shaped like redis-cell's reply.
public struct RateLimitDecision: Sendable, Hashable {
    public var allowed: Bool
    /// The bucket size.
    public var limit: Int
    /// Tokens left after this decision.
    public var remaining: Int
    /// When a refused call could succeed (zero when allowed).
    public var retryAfter: Duration
    /// When the bucket will be full again.
    public var resetAfter: Duration
    /// How long an allowed call must wait for its reserved slot (zero without waiting).
    public var wait: Duration

    public init(allowed: Bool, limit: Int, remaining: Int, retryAfter: Duration, resetAfter: Duration, wait: Duration = .zero) {
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.retryAfter = retryAfter
        self.resetAfter = resetAfter
        self.wait = wait
    }
}

/// One limit to check in a ``RateLimitStore/acquire(_:maxWait:)`` batch.
public struct RateLimitRequest: Sendable, Hashable {
    public var key: String
    public var cost: Int
    public var limit: RateLimit
    public init(key: String, cost: Int = 1, limit: RateLimit) {
        self.key = key
        self.cost = cost
        self.limit = limit
    }
}

/// Where rate-limit state lives. Designed for a store one network round trip away: a whole
/// batch of limits is one call.
public protocol RateLimitStore: Sendable {
    /// Decides every request at once, all or nothing: when any is refused, no tokens are
    /// taken from any bucket. When all could be allowed within `maxWait`, the slots are
    /// reserved (later callers queue behind) and each decision's `wait` says how long to
    /// wait before running.
    func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision]
}

/// A rate-limit store that decides without waiting (state in this process). The middleware
/// calls it directly, saving an async call per decision.
package protocol SynchronousRateLimitStore: RateLimitStore {
    /// The same decisions as ``RateLimitStore/acquire(_:maxWait:)``, made at once.
    func decide(_ requests: [RateLimitRequest], maxWait: Duration) -> [RateLimitDecision]
    /// ``decide(_:maxWait:)`` for one request, without the arrays (the common case: one rule).
    func decide(_ request: RateLimitRequest, maxWait: Duration) -> RateLimitDecision
}

/// GCRA (the generic cell rate algorithm), token-bucket semantics, as pure functions over a
/// key's theoretical arrival time (TAT, nanoseconds). Shared by the memory and file stores;
/// the Redis store runs the same arithmetic in Lua.
public enum GCRA {
    public struct Outcome: Sendable {
        /// Nanoseconds from now until the request conforms (≤ 0: now).
        public var waitNanos: Int64
        /// The TAT if the request is accepted.
        public var newTAT: Int64
    }

    public static func evaluate(tat: Int64?, now: Int64, cost: Int, limit: RateLimit) -> Outcome {
        let interval = limit.emissionInterval
        let base = max(tat ?? now, now)
        let newTAT = base &+ Int64(cost) &* interval
        let tolerance = Int64(limit.burst) &* interval
        return Outcome(waitNanos: newTAT &- tolerance &- now, newTAT: newTAT)
    }

    /// The decision for a request given the TAT it leaves behind.
    public static func decision(accepted: Bool, tat: Int64?, outcome: Outcome, now: Int64, limit: RateLimit) -> RateLimitDecision {
        let interval = limit.emissionInterval
        let tolerance = Int64(limit.burst) &* interval
        if accepted {
            let remaining = (tolerance - (outcome.newTAT - now)) / interval
            return RateLimitDecision(
                allowed: true, limit: limit.burst, remaining: Int(max(0, remaining)),
                retryAfter: .zero, resetAfter: .nanoseconds(max(0, outcome.newTAT - now)),
                wait: .nanoseconds(max(0, outcome.waitNanos)))
        }
        let current = max(tat ?? now, now)
        let remaining = (tolerance - (current - now)) / interval
        return RateLimitDecision(
            allowed: false, limit: limit.burst, remaining: Int(max(0, remaining)),
            retryAfter: .nanoseconds(max(0, outcome.waitNanos)), resetAfter: .nanoseconds(max(0, current - now)))
    }

    /// Applies one request against `tats`, mutating its bucket only when accepted.
    static func apply(_ request: RateLimitRequest, maxWait: Duration, now: Int64, tats: inout [String: Int64]) -> RateLimitDecision {
        // One hash lookup: read and write the bucket through the subscript's in-place access.
        modify(&tats[request.key]) { tat in
            let outcome = evaluate(tat: tat, now: now, cost: request.cost, limit: request.limit)
            let accepted = outcome.waitNanos <= 0 || outcome.waitNanos <= maxWait.nanosecondsClamped
            let result = decision(accepted: accepted, tat: tat, outcome: outcome, now: now, limit: request.limit)
            if accepted { tat = outcome.newTAT }
            return result
        }
    }

    /// Applies a batch all-or-nothing against `tats`, mutating them only when accepted.
    static func apply(
        _ requests: [RateLimitRequest], maxWait: Duration, now: Int64, tats: inout [String: Int64]
    ) -> [RateLimitDecision] {
        if requests.count == 1 {
            // The common case, without the batch bookkeeping.
            return [apply(requests[0], maxWait: maxWait, now: now, tats: &tats)]
        }
        var outcomes: [Outcome] = []
        outcomes.reserveCapacity(requests.count)
        var pending: [String: Int64] = [:]  // the same key twice in one batch stacks
        var worstWait: Int64 = .min
        for request in requests {
            let tat = pending[request.key] ?? tats[request.key]
            let outcome = evaluate(tat: tat, now: now, cost: request.cost, limit: request.limit)
            pending[request.key] = outcome.newTAT
            outcomes.append(outcome)
            worstWait = max(worstWait, outcome.waitNanos)
        }
        let accepted = worstWait <= 0 || worstWait <= maxWait.nanosecondsClamped
        var decisions: [RateLimitDecision] = []
        decisions.reserveCapacity(requests.count)
        for (request, outcome) in zip(requests, outcomes) {
            var decision = decision(accepted: accepted, tat: tats[request.key], outcome: outcome, now: now, limit: request.limit)
            if accepted { decision.wait = .nanoseconds(max(0, worstWait)) }
            decisions.append(decision)
        }
        if accepted { for (key, tat) in pending { tats[key] = tat } }
        return decisions
    }
}

/// Rate-limit state in this process. The default store.
public final class MemoryRateLimitStore: SynchronousRateLimitStore {
    struct State {
        var tats: [String: Int64] = [:]
        var writesSinceSweep = 0
    }
    private let state = Mutex(State())
    private let clock: any ToolOpsClock

    public init(clock: any ToolOpsClock = SystemClock()) { self.clock = clock }

    public func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        decide(requests, maxWait: maxWait)
    }

    /// Synchronous form of ``acquire(_:maxWait:)``.
    public func decide(_ requests: [RateLimitRequest], maxWait: Duration) -> [RateLimitDecision] {
        let now = clock.now.nanoseconds
        return state.withLock { state in
            defer { Self.sweep(&state, now: now) }
            return GCRA.apply(requests, maxWait: maxWait, now: now, tats: &state.tats)
        }
    }

    public func decide(_ request: RateLimitRequest, maxWait: Duration) -> RateLimitDecision {
        let now = clock.now.nanoseconds
        return state.withLock { state in
            defer { Self.sweep(&state, now: now) }
            return GCRA.apply(request, maxWait: maxWait, now: now, tats: &state.tats)
        }
    }

    /// Buckets whose TAT has passed are full again: forget them now and then.
    static func sweep(_ state: inout State, now: Int64) {
        state.writesSinceSweep += 1
        if state.writesSinceSweep >= 4096 && state.tats.count > 1024 {
            state.tats = state.tats.filter { $0.value > now }
            state.writesSinceSweep = 0
        }
    }

    /// Number of keys with state (full buckets may already be forgotten).
    public var keyCount: Int { state.withLock { $0.tats.count } }
}

/// Runs `body` on `value` in place (with a dictionary subscript: one lookup for read and write).
@inline(__always)
func modify<Value, Result>(_ value: inout Value, _ body: (inout Value) -> Result) -> Result { body(&value) }
