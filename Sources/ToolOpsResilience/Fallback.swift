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
    public var description: String { "\(kind)" }
}

/// Runs `body`, giving up at `deadline` on `clock`: returns `nil` then (the work is cancelled
/// and awaited; nothing keeps running).
func withDeadline<T: Sendable>(
    _ duration: Duration, clock: any ToolOpsClock, _ body: @escaping @Sendable () async throws -> T
) async throws -> T? {
    if clock is SystemClock && DeadlineWatcher.shared.isAvailable {
        let deadline = (clock.now + duration).nanoseconds
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                let (result, fired) = await DeadlineWatcher.shared.withDeadline(deadline) { try await body() }
                if fired, case .failure = result { return nil }
                return try result.get()
            }
            return try await group.next() ?? nil
        }
    }
    return try await withThrowingTaskGroup(of: T??.self) { group in
        group.addTask { .some(try await body()) }
        group.addTask {
            try await clock.sleep(for: duration)
            return .none
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { return nil }
        return first ?? nil
    }
}

/// Tracks whether a shared store is usable and when to try it again.
final class OutageTracker: Sendable {
    struct State {
        var degraded = false
        var nextProbe: ClockInstant = .init(nanoseconds: .min)
    }
    let name: String
    let probeInterval: Duration
    let observer: ResilienceObserver?
    private let state = Mutex(State())
    /// `toolops_store_degraded{store="…"}`: 1 while the policy runs on its degraded mode.
    private let gauge: Gauge

    init(name: String, probeInterval: Duration, observer: ResilienceObserver?) {
        self.name = name
        self.probeInterval = probeInterval
        self.observer = observer
        self.gauge = Gauge(label: "toolops_store_degraded", dimensions: [("store", name)])
        gauge.record(0)
    }

    var isDegraded: Bool { state.withLock { $0.degraded } }

    /// Whether to try the shared store now: always when healthy; once per probe interval
    /// while degraded (the call that probes is the one that finds out).
    func shouldTryPrimary(now: ClockInstant) -> Bool {
        state.withLock { state in
            guard state.degraded else { return true }
            guard now >= state.nextProbe else { return false }
            state.nextProbe = now + probeInterval
            return true
        }
    }

    func failed(_ error: any Error, now: ClockInstant) {
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

    /// While degraded, calls `check` every probe interval and switches back on success, so a
    /// store recovers even without traffic. Returns when the task is cancelled.
    func runProbes(clock: any ToolOpsClock, deadline: Duration, check: @escaping @Sendable () async throws -> Void) async {
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

    func succeeded() {
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

/// A rate-limit store that uses a shared store (Redis) and, when it is unreachable, the
/// declared ``DegradedMode``. Each decision waits at most `deadline` for the shared store;
/// while degraded, one call per `probeInterval` tries it again and, on success, switches back.
///
/// Only outages count: ``ToolOpsError/Code/storeUnavailable`` (the Redis store's mapping of
/// "Redis unavailable") and a missed deadline. Any other error — Redis answering with an
/// error — is rethrown, never hidden behind the fallback.
public final class FallbackRateLimitStore: RateLimitStore {
    public let primary: any RateLimitStore
    public let fallback: any RateLimitStore
    public let mode: DegradedMode
    public let deadline: Duration
    let clock: any ToolOpsClock
    let tracker: OutageTracker

    /// - Parameters:
    ///   - mode: defaults to ``DegradedMode/local(scale:)`` with scale 1.
    ///   - deadline: longest wait for the shared store per decision. Defaults to 100 ms.
    ///   - probeInterval: how often a degraded store is retried. Defaults to 1 s.
    public init(
        primary: any RateLimitStore, fallback: any RateLimitStore = MemoryRateLimitStore(), mode: DegradedMode = .local(),
        deadline: Duration = .milliseconds(100), probeInterval: Duration = .seconds(1),
        clock: any ToolOpsClock = SystemClock(), name: String = "rate-limit", observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) {
        try requireConfiguration(deadline > .zero, "deadline must be positive")
        try requireConfiguration(probeInterval > .zero, "probeInterval must be positive")
        if case .local(let scale) = mode.kind {
            try requireConfiguration(scale > 0 && scale <= 1, "local fallback scale must be in (0, 1], got \(scale)")
        }
        self.primary = primary
        self.fallback = fallback
        self.mode = mode
        self.deadline = deadline
        self.clock = clock
        self.tracker = OutageTracker(name: name, probeInterval: probeInterval, observer: observer)
    }

    /// `true` while decisions are made by the degraded mode (health reports `degraded`).
    public var isDegraded: Bool { tracker.isDegraded }

    /// Runs background probes until cancelled: while degraded, `check` (e.g. a Redis `PING`)
    /// is tried every probe interval and a success switches back to the shared store.
    /// Run it in a task group or as part of a ServiceLifecycle service.
    public func runProbes(check: @escaping @Sendable () async throws -> Void) async {
        await tracker.runProbes(clock: clock, deadline: deadline, check: check)
    }

    public func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        if tracker.shouldTryPrimary(now: clock.now) {
            do {
                let primary = self.primary
                if let decisions = try await withDeadline(deadline, clock: clock, { try await primary.acquire(requests, maxWait: maxWait) }) {
                    tracker.succeeded()
                    return decisions
                }
                tracker.failed(ToolOpsError(.storeUnavailable, "no answer within \(deadline)"), now: clock.now)
            } catch let error as ToolOpsError where error.code == .storeUnavailable {
                tracker.failed(error, now: clock.now)
            }
            try Task.checkCancellation()
        }
        return try await degraded(requests, maxWait: maxWait)
    }

    private func degraded(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        switch mode.kind {
        case .failOpen:
            return requests.map {
                RateLimitDecision(allowed: true, limit: $0.limit.burst, remaining: $0.limit.burst, retryAfter: .zero, resetAfter: .zero)
            }
        case .failClosed:
            return requests.map {
                RateLimitDecision(allowed: false, limit: $0.limit.burst, remaining: 0, retryAfter: tracker.probeInterval, resetAfter: tracker.probeInterval)
            }
        case .local(let scale):
            let scaled = requests.map { request -> RateLimitRequest in
                guard scale < 1 else { return request }
                var copy = request
                let rate = max(1, Int((Double(request.limit.rate) * scale).rounded(.down)))
                let burst = max(1, Int((Double(request.limit.burst) * scale).rounded(.down)))
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
public final class FallbackBulkheadStore: BulkheadStore {
    public let primary: any BulkheadStore
    public let fallback: any BulkheadStore
    public let mode: DegradedMode
    public let deadline: Duration
    let clock: any ToolOpsClock
    let tracker: OutageTracker
    /// Permits from the fallback store carry this bit, so releases find their way back.
    static let localBit: UInt64 = 1 << 63

    public init(
        primary: any BulkheadStore, fallback: any BulkheadStore = MemoryBulkheadStore(), mode: DegradedMode = .local(),
        deadline: Duration = .milliseconds(100), probeInterval: Duration = .seconds(1),
        clock: any ToolOpsClock = SystemClock(), name: String = "bulkhead", observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) {
        try requireConfiguration(deadline > .zero, "deadline must be positive")
        try requireConfiguration(probeInterval > .zero, "probeInterval must be positive")
        if case .local(let scale) = mode.kind {
            try requireConfiguration(scale > 0 && scale <= 1, "local fallback scale must be in (0, 1], got \(scale)")
        }
        self.primary = primary
        self.fallback = fallback
        self.mode = mode
        self.deadline = deadline
        self.clock = clock
        self.tracker = OutageTracker(name: name, probeInterval: probeInterval, observer: observer)
    }

    public var isDegraded: Bool { tracker.isDegraded }

    /// Runs background probes until cancelled: while degraded, `check` (e.g. a Redis `PING`)
    /// is tried every probe interval and a success switches back to the shared store.
    /// Run it in a task group or as part of a ServiceLifecycle service.
    public func runProbes(check: @escaping @Sendable () async throws -> Void) async {
        await tracker.runProbes(clock: clock, deadline: deadline, check: check)
    }

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        if tracker.shouldTryPrimary(now: clock.now) {
            do {
                let primary = self.primary
                // The deadline bounds each attempt to reach the store, on top of any wait for a slot.
                if let permit = try await withDeadline(deadline + maxWait, clock: clock, {
                    try await primary.acquire(key: key, limit: limit, lease: lease, maxWait: maxWait)
                }) {
                    tracker.succeeded()
                    return permit
                }
                tracker.failed(ToolOpsError(.storeUnavailable, "no answer within \(deadline)"), now: clock.now)
            } catch let error as ToolOpsError where error.code == .storeUnavailable {
                tracker.failed(error, now: clock.now)
            }
            try Task.checkCancellation()
        }
        switch mode.kind {
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
public final class FallbackCircuitBreakerStore: CircuitBreakerStore {
    public let primary: any CircuitBreakerStore
    public let fallback: any CircuitBreakerStore
    public let mode: DegradedMode
    public let deadline: Duration
    let clock: any ToolOpsClock
    let tracker: OutageTracker

    public init(
        primary: any CircuitBreakerStore, fallback: any CircuitBreakerStore = MemoryCircuitBreakerStore(), mode: DegradedMode = .local(),
        deadline: Duration = .milliseconds(100), probeInterval: Duration = .seconds(1),
        clock: any ToolOpsClock = SystemClock(), name: String = "circuit-breaker", observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) {
        try requireConfiguration(deadline > .zero, "deadline must be positive")
        try requireConfiguration(probeInterval > .zero, "probeInterval must be positive")
        self.primary = primary
        self.fallback = fallback
        self.mode = mode
        self.deadline = deadline
        self.clock = clock
        self.tracker = OutageTracker(name: name, probeInterval: probeInterval, observer: observer)
    }

    public var isDegraded: Bool { tracker.isDegraded }

    /// Runs background probes until cancelled: while degraded, `check` (e.g. a Redis `PING`)
    /// is tried every probe interval and a success switches back to the shared store.
    /// Run it in a task group or as part of a ServiceLifecycle service.
    public func runProbes(check: @escaping @Sendable () async throws -> Void) async {
        await tracker.runProbes(clock: clock, deadline: deadline, check: check)
    }

    /// Runs `operation` on the primary within the deadline; `nil` means "use the degraded mode".
    private func onPrimary<T: Sendable>(_ operation: @escaping @Sendable (any CircuitBreakerStore) async throws -> T) async throws -> T? {
        guard tracker.shouldTryPrimary(now: clock.now) else { return nil }
        do {
            let primary = self.primary
            if let value = try await withDeadline(deadline, clock: clock, { try await operation(primary) }) {
                tracker.succeeded()
                return value
            }
            tracker.failed(ToolOpsError(.storeUnavailable, "no answer within \(deadline)"), now: clock.now)
        } catch let error as ToolOpsError where error.code == .storeUnavailable {
            tracker.failed(error, now: clock.now)
        }
        try Task.checkCancellation()
        return nil
    }

    public func admit(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitAdmission {
        if let admission = try await onPrimary({ try await $0.admit(key: key, policy: policy) }) { return admission }
        switch mode.kind {
        case .failOpen: return CircuitAdmission(allowed: true, probe: false, retryAfter: .zero, transition: nil)
        case .failClosed: return CircuitAdmission(allowed: false, probe: false, retryAfter: tracker.probeInterval, transition: nil)
        case .local: return try await fallback.admit(key: key, policy: policy)
        }
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        if !tracker.isDegraded, let transition = try await onPrimary({ try await $0.record(key: key, outcome: outcome, probe: probe, policy: policy) }) {
            return transition
        }
        if case .local = mode.kind { return try await fallback.record(key: key, outcome: outcome, probe: probe, policy: policy) }
        return nil
    }

    public func control(key: String, _ action: CircuitControl, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        // Operators act on the shared breaker; a local copy follows so the action also holds while degraded.
        _ = try? await fallback.control(key: key, action, policy: policy)
        return try await primary.control(key: key, action, policy: policy)
    }

    public func snapshot(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitBreakerSnapshot {
        if let snapshot = try await onPrimary({ try await $0.snapshot(key: key, policy: policy) }) { return snapshot }
        return try await fallback.snapshot(key: key, policy: policy)
    }
}
