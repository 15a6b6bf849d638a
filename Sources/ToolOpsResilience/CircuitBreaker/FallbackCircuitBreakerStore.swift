import ToolOpsCore

/// A circuit-breaker store that uses a shared store (Redis) and, when it is unreachable, the
/// declared ``DegradedMode``: `local` judges calls with a breaker of this process (the
/// fallback store; `scale` does not apply), `failOpen` admits everything, `failClosed`
/// refuses everything. Outcomes recorded while degraded go to the fallback only.
public final class FallbackCircuitBreakerStore: CircuitBreakerStore, FailoverFallbackStore {
    public let primary: any CircuitBreakerStore
    public let fallback: any CircuitBreakerStore
    package let failover: StoreFailover

    public init(
        primary: any CircuitBreakerStore, fallback: any CircuitBreakerStore = MemoryCircuitBreakerStore(), mode: DegradedMode = .local(),
        deadline: Duration = .milliseconds(100), probeInterval: Duration = .seconds(1),
        clock: any ToolOpsClock = SystemClock(), name: String = "circuit-breaker", observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) {
        self.primary = primary
        self.fallback = fallback
        self.failover = try StoreFailover(
            name: name, mode: mode, deadline: deadline, probeInterval: probeInterval, clock: clock, observer: observer.map(ResilienceEvent.forwarding))
    }

    public func admit(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitAdmission {
        let primary = self.primary
        // The hot path: a closed breaker known locally needs no deadline (and no child task).
        if !failover.isDegraded, let admission = primary.admitLocally(key: key, policy: policy) { return admission }
        if let admission = try await failover.attempt({ try await primary.admit(key: key, policy: policy) }) { return admission }
        switch failover.mode.kind {
        case .failOpen: return CircuitAdmission(allowed: true, probe: false, retryAfter: .zero, transition: nil)
        case .failClosed: return CircuitAdmission(allowed: false, probe: false, retryAfter: failover.probeInterval, transition: nil)
        case .local: return try await fallback.admit(key: key, policy: policy)
        }
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try await record(key: key, outcome: outcome, probe: probe, round: 0, policy: policy)
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        let primary = self.primary
        if !failover.isDegraded && primary.recordsWithoutWaiting {
            return try await primary.record(key: key, outcome: outcome, probe: probe, round: round, policy: policy)
        }
        if !failover.isDegraded,
            let transition = try await failover.attempt({
                try await primary.record(key: key, outcome: outcome, probe: probe, round: round, policy: policy)
            })
        {
            return transition
        }
        // Rounds are the primary's; the local breaker counts the probe in its own current round.
        if case .local = failover.mode.kind { return try await fallback.record(key: key, outcome: outcome, probe: probe, policy: policy) }
        return nil
    }

    public func control(key: String, _ action: CircuitControl, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        // Operators act on the shared breaker; a local copy follows so the action also holds while degraded.
        _ = try? await fallback.control(key: key, action, policy: policy)
        return try await primary.control(key: key, action, policy: policy)
    }

    public func snapshot(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitBreakerSnapshot {
        let primary = self.primary
        if let snapshot = try await failover.attempt({ try await primary.snapshot(key: key, policy: policy) }) { return snapshot }
        return try await fallback.snapshot(key: key, policy: policy)
    }
}
