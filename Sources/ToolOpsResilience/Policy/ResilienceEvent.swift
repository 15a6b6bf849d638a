import ToolOpsCore

/// Something a resilience policy decided, for metrics and logs.
public enum ResilienceEvent: Sendable {
    /// A rate limit refused (or, in shadow mode, would have refused) a call.
    case rateLimited(tool: ToolID, key: String, decision: RateLimitDecision, shadow: Bool)
    /// One rule decided a call: `rule` names the rule (`scope:pattern`, bounded by the
    /// configuration, unlike the bucket key), `allowed` is its decision. Reported for every
    /// rule a call meets, allowed or not, so rates of both can be counted.
    case rateLimitDecided(tool: ToolID, rule: String, allowed: Bool, shadow: Bool)
    /// A call waited for a reserved rate-limit slot.
    case rateLimitWaited(tool: ToolID, key: String, wait: Duration)
    /// A breaker changed state.
    case circuitStateChanged(key: String, from: CircuitState, to: CircuitState)
    /// A breaker refused (or in shadow mode would have refused) a call.
    case circuitRejected(tool: ToolID, key: String, retryAfter: Duration, shadow: Bool)
    /// A bulkhead had no slot (in shadow mode the call ran anyway).
    case bulkheadRejected(tool: ToolID, key: String, shadow: Bool)
    /// A call took a bulkhead slot (reported before it runs).
    case bulkheadAcquired(tool: ToolID, key: String)
    /// A call gave its bulkhead slot back.
    case bulkheadReleased(tool: ToolID, key: String)
    /// A retry is about to sleep `delay` before attempt `attempt` (in shadow mode: would have retried).
    case retrying(tool: ToolID, attempt: Int, delay: Duration, error: any Error, shadow: Bool)
    /// The retry budget refused a retry.
    case retryBudgetExhausted(tool: ToolID)
    /// A call exceeded its timeout (in shadow mode it was left to finish).
    case timedOut(tool: ToolID, after: Duration, shadow: Bool)
    /// A shared store (Redis) failed; the named policy now runs in its degraded mode.
    case storeDegraded(store: String, error: any Error)
    /// The shared store answered again; the policy is back on it.
    case storeRecovered(store: String)
}

/// Receives ``ResilienceEvent``s. Called outside any lock; keep it quick.
public typealias ResilienceObserver = @Sendable (ResilienceEvent) -> Void

extension ResilienceEvent {
    /// A failover observer that reports to `observer` as ``storeDegraded(store:error:)`` and
    /// ``storeRecovered(store:)``.
    static func forwarding(to observer: @escaping ResilienceObserver) -> FailoverObserver {
        { event in
            switch event {
            case .degraded(let store, let error): observer(.storeDegraded(store: store, error: error))
            case .recovered(let store): observer(.storeRecovered(store: store))
            }
        }
    }
}
