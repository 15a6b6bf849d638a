import ToolOpsCore

/// A rate-limit store that uses a shared store (Redis) and, when it is unreachable, the
/// declared ``DegradedMode``. Each decision waits at most `deadline` for the shared store;
/// while degraded, one call per `probeInterval` tries it again and, on success, switches back.
///
/// Only outages count: ``ToolOpsError/Code/storeUnavailable`` (the Redis store's mapping of
/// "Redis unavailable") and a missed deadline. Any other error — Redis answering with an
/// error — is rethrown, never hidden behind the fallback.
public final class FallbackRateLimitStore: LocallyDecidingRateLimitStore, FailoverFallbackStore {
    public let primary: any RateLimitStore
    /// The primary when it can decide from local state (Redis: leased tokens).
    let locallyDeciding: (any LocallyDecidingRateLimitStore)?
    public let fallback: any RateLimitStore
    package let failover: StoreFailover

    /// - Parameters:
    ///   - mode: defaults to ``DegradedMode/local(scale:)`` with scale 1.
    ///   - deadline: longest wait for the shared store per decision. Defaults to 100 ms.
    ///   - probeInterval: how often a degraded store is retried. Defaults to 1 s.
    public init(
        primary: any RateLimitStore, fallback: any RateLimitStore = MemoryRateLimitStore(), mode: DegradedMode = .local(),
        deadline: Duration = .milliseconds(100), probeInterval: Duration = .seconds(1),
        clock: any ToolOpsClock = SystemClock(), name: String = "rate-limit", observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) {
        self.primary = primary
        self.locallyDeciding = primary as? any LocallyDecidingRateLimitStore
        self.fallback = fallback
        self.failover = try StoreFailover(
            name: name, mode: mode, deadline: deadline, probeInterval: probeInterval, clock: clock, observer: observer.map(ResilienceEvent.forwarding))
    }

    /// The primary's local decision (leased tokens, a remembered refusal) while it is healthy:
    /// no round trip, so no deadline to watch. Degraded: `nil` (``acquire(_:maxWait:)`` decides).
    package func decideLocally(_ request: RateLimitRequest) -> RateLimitDecision? {
        guard let locallyDeciding, !failover.isDegraded else { return nil }
        return locallyDeciding.decideLocally(request)
    }

    public func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        let primary = self.primary
        if let decisions = try await failover.attempt({ try await primary.acquire(requests, maxWait: maxWait) }) { return decisions }
        switch failover.mode.kind {
        case .failOpen:
            return requests.map {
                RateLimitDecision(allowed: true, limit: $0.limit.burst, remaining: $0.limit.burst, retryAfter: .zero, resetAfter: .zero)
            }
        case .failClosed:
            let wait = failover.probeInterval
            return requests.map {
                RateLimitDecision(allowed: false, limit: $0.limit.burst, remaining: 0, retryAfter: wait, resetAfter: wait)
            }
        case .local(let scale):
            let scaled = requests.map { request -> RateLimitRequest in
                guard scale < 1 else { return request }
                var copy = request
                let rate = max(1, Int((Double(request.limit.rate) * scale).rounded(.down)))
                // Never below the call's cost: a call that fits the shared limit must stay possible.
                let burst = max(1, request.cost, Int((Double(request.limit.burst) * scale).rounded(.down)))
                copy.limit = (try? RateLimit(rate: rate, per: request.limit.period, burst: burst)) ?? request.limit
                return copy
            }
            return try await fallback.acquire(scaled, maxWait: maxWait)
        }
    }
}
