import ToolOpsCore

/// Where rate-limit state lives. Designed for a store one network round trip away: a whole
/// batch of limits is one call.
public protocol RateLimitStore: Sendable {
    /// Decides every request at once, all or nothing: when any is refused, no tokens are
    /// taken from any bucket. When all could be allowed within `maxWait`, the slots are
    /// reserved (later callers queue behind) and each decision's `wait` says how long to
    /// wait before running.
    func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision]
}

/// A rate-limit store that can sometimes decide one request from state in this process —
/// leased tokens, a remembered refusal — without waiting; otherwise the caller asks
/// ``RateLimitStore/acquire(_:maxWait:)``. The middleware tries it first, saving the async
/// call, the failover's deadline and its task on most decisions of a busy shared bucket.
package protocol LocallyDecidingRateLimitStore: RateLimitStore {
    /// The decision for `request` with no wait allowed, if it can be made now; `nil` changes
    /// nothing (ask ``RateLimitStore/acquire(_:maxWait:)``).
    func decideLocally(_ request: RateLimitRequest) -> RateLimitDecision?
}

/// A rate-limit store that decides without waiting (state in this process). The middleware
/// calls it directly, saving an async call per decision.
package protocol SynchronousRateLimitStore: RateLimitStore {
    /// The same decisions as ``RateLimitStore/acquire(_:maxWait:)``, made at once.
    func decide(_ requests: [RateLimitRequest], maxWait: Duration) -> [RateLimitDecision]
    /// ``decide(_:maxWait:)`` for one request, without the arrays (the common case: one rule).
    func decide(_ request: RateLimitRequest, maxWait: Duration) -> RateLimitDecision
}
