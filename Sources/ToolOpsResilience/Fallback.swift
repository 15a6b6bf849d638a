import Metrics
import Synchronization
import ToolOpsCore

/// What a policy does while its shared store is unreachable.
public struct DegradedMode: Sendable, Hashable, CustomStringConvertible {
    enum Kind: Hashable, Sendable { case failOpen, failClosed, local(Double) }
    let kind: Kind
    /// Let every call through.
    public static let failOpen = DegradedMode(kind: .failOpen)
    /// Refuse every call (as rate limited, with a retry-after of the probe interval).
    public static let failClosed = DegradedMode(kind: .failClosed)
    /// Decide with the local fallback store, limits multiplied by `scale` — e.g. `1/N` with N
    /// replicas keeps the cluster near its total limit.
    public static func local(scale: Double = 1) -> DegradedMode { DegradedMode(kind: .local(scale)) }
    /// `fail-open`, `fail-closed` or `local(scale: 0.5)`, as shown in health details.
    public var description: String {
        switch kind {
        case .failOpen: "fail-open"
        case .failClosed: "fail-closed"
        case .local(let scale): "local(scale: \(scale))"
        }
    }
}

/// The failover logic every fallback store shares: whether the shared store is usable, when
/// to try it again, the per-call deadline, background probes, and the degraded gauge.
package final class StoreFailover: Sendable {
    struct State {
        var degraded = false
        var nextProbe: ClockInstant = .init(nanoseconds: .min)
    }
    package let name: String
    package let mode: DegradedMode
    package let deadline: Duration
    package let probeInterval: Duration
    package let clock: any ToolOpsClock
    package let observer: ResilienceObserver?
    private let state = Mutex(State())
    /// `toolops_store_degraded{store="…"}`: 1 while the policy runs on its degraded mode.
    private let gauge: Gauge

    package init(
        name: String, mode: DegradedMode, deadline: Duration, probeInterval: Duration,
        clock: any ToolOpsClock, observer: ResilienceObserver?
    ) throws(ToolOpsError) {
        try requireConfiguration(deadline > .zero, "deadline must be positive")
        try requireConfiguration(probeInterval > .zero, "probeInterval must be positive")
        if case .local(let scale) = mode.kind {
            try requireConfiguration(scale > 0 && scale <= 1, "local fallback scale must be in (0, 1], got \(scale)")
        }
        self.name = name
        self.mode = mode
        self.deadline = deadline
        self.probeInterval = probeInterval
        self.clock = clock
        self.observer = observer
        self.gauge = Gauge(label: "toolops_store_degraded", dimensions: [("store", name)])
        gauge.record(0)
    }

    package var isDegraded: Bool { state.withLock { $0.degraded } }

    /// Runs `operation` on the shared store within the deadline (plus `extra`). Returns `nil`
    /// when the caller should use its degraded mode: the store is known to be down (and no
    /// probe is due), it reported an outage, or it missed the deadline. Other errors propagate.
    package func attempt<T: Sendable>(extra: Duration = .zero, _ operation: @escaping @Sendable () async throws -> T) async throws -> T? {
        guard shouldTryPrimary(now: clock.now) else { return nil }
        do {
            if let value = try await withDeadline(deadline + extra, clock: clock, operation) {
                succeeded()
                return value
            }
            failed(ToolOpsError(.storeUnavailable, "no answer within \(deadline)"), now: clock.now)
        } catch let error as ToolOpsError where error.code == .storeUnavailable {
            failed(error, now: clock.now)
        }
        try Task.checkCancellation()
        return nil
    }

    /// Always when healthy; once per probe interval while degraded (that call finds out).
    private func shouldTryPrimary(now: ClockInstant) -> Bool {
        state.withLock { state in
            guard state.degraded else { return true }
            guard now >= state.nextProbe else { return false }
            state.nextProbe = now + probeInterval
            return true
        }
    }

    /// While degraded, calls `check` every probe interval and switches back on success, so a
    /// store recovers even without traffic. Returns when the task is cancelled.
    package func runProbes(check: @escaping @Sendable () async throws -> Void) async {
        while !Task.isCancelled {
            do { try await clock.sleep(for: probeInterval) } catch { return }
            guard isDegraded else { continue }
            do {
                if try await withDeadline(deadline, clock: clock, { try await check(); return true }) == true { succeeded() }
            } catch {
                // Still down; the next interval tries again.
            }
        }
    }

    private func failed(_ error: any Error, now: ClockInstant) {
        let changed = state.withLock { state -> Bool in
            state.nextProbe = now + probeInterval
            defer { state.degraded = true }
            return !state.degraded
        }
        if changed {
            gauge.record(1)
            observer?(.storeDegraded(store: name, error: error))
        }
    }

    private func succeeded() {
        let changed = state.withLock { state -> Bool in
            defer { state.degraded = false }
            return state.degraded
        }
        if changed {
            gauge.record(0)
            observer?(.storeRecovered(store: name))
        }
    }
}

/// What every fallback store offers: its state and background probes.
public protocol FallbackStore: Sendable {
    /// The store's name in metrics, events and health details (e.g. `rate-limit`).
    var name: String { get }
    /// `true` while calls are decided by the degraded mode (health reports `degraded`).
    var isDegraded: Bool { get }
    /// Runs background probes until cancelled: while degraded, `check` (e.g. a Redis `PING`)
    /// is tried every probe interval and a success switches back to the shared store.
    /// Run it in a task group or as part of a ServiceLifecycle service.
    func runProbes(check: @escaping @Sendable () async throws -> Void) async
    /// The declared degraded mode.
    var mode: DegradedMode { get }
    /// The longest wait for the shared store per call.
    var deadline: Duration { get }
}

/// A fallback store whose state is a ``StoreFailover``: the ``FallbackStore`` members come
/// from it, written once here instead of in every wrapper.
package protocol FailoverFallbackStore: FallbackStore {
    var failover: StoreFailover { get }
}

extension FailoverFallbackStore {
    public var name: String { failover.name }
    public var isDegraded: Bool { failover.isDegraded }
    public var mode: DegradedMode { failover.mode }
    public var deadline: Duration { failover.deadline }
    public func runProbes(check: @escaping @Sendable () async throws -> Void) async { await failover.runProbes(check: check) }
}

/// A rate-limit store that uses a shared store (Redis) and, when it is unreachable, the
/// declared ``DegradedMode``. Each decision waits at most `deadline` for the shared store;
/// while degraded, one call per `probeInterval` tries it again and, on success, switches back.
///
/// Only outages count: ``ToolOpsError/Code/storeUnavailable`` (the Redis store's mapping of
/// "Redis unavailable") and a missed deadline. Any other error — Redis answering with an
/// error — is rethrown, never hidden behind the fallback.
public final class FallbackRateLimitStore: RateLimitStore, FailoverFallbackStore {
    public let primary: any RateLimitStore
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
        self.fallback = fallback
        self.failover = try StoreFailover(
            name: name, mode: mode, deadline: deadline, probeInterval: probeInterval, clock: clock, observer: observer)
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

/// A bulkhead store that uses a shared store (Redis) and, when it is unreachable, the
/// declared ``DegradedMode`` (local: the fallback store with `limit × scale` slots). Permits
/// are released to the store that issued them.
public final class FallbackBulkheadStore: BulkheadStore, FailoverFallbackStore {
    public let primary: any BulkheadStore
    public let fallback: any BulkheadStore
    package let failover: StoreFailover
    /// Permits from the fallback store carry this bit, so releases find their way back.
    static let localBit: UInt64 = 1 << 63

    public init(
        primary: any BulkheadStore, fallback: any BulkheadStore = MemoryBulkheadStore(), mode: DegradedMode = .local(),
        deadline: Duration = .milliseconds(100), probeInterval: Duration = .seconds(1),
        clock: any ToolOpsClock = SystemClock(), name: String = "bulkhead", observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) {
        self.primary = primary
        self.fallback = fallback
        self.failover = try StoreFailover(
            name: name, mode: mode, deadline: deadline, probeInterval: probeInterval, clock: clock, observer: observer)
    }

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        let primary = self.primary
        // The deadline bounds reaching the store, on top of any wait for a slot.
        if let permit = try await failover.attempt(extra: maxWait, {
            try await primary.acquire(key: key, limit: limit, lease: lease, maxWait: maxWait)
        }) {
            return permit
        }
        switch failover.mode.kind {
        case .failOpen:
            return BulkheadPermit(key: key, token: 0)
        case .failClosed:
            throw ToolOpsError(.bulkheadFull, "bulkhead \(key) refuses calls while its store is unavailable")
        case .local(let scale):
            let scaled = max(1, Int((Double(limit) * scale).rounded(.down)))
            let permit = try await fallback.acquire(key: key, limit: scaled, lease: lease, maxWait: maxWait)
            return BulkheadPermit(key: key, token: permit.token | Self.localBit)
        }
    }

    public func release(_ permit: BulkheadPermit) async {
        if permit.token == 0 { return }  // a fail-open pass
        if permit.token & Self.localBit != 0 {
            await fallback.release(BulkheadPermit(key: permit.key, token: permit.token & ~Self.localBit))
        } else {
            await primary.release(permit)
        }
    }
}

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
            name: name, mode: mode, deadline: deadline, probeInterval: probeInterval, clock: clock, observer: observer)
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
