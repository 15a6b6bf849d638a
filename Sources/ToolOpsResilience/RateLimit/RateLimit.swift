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
