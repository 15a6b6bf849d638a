import ToolOpsCore

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
