import Synchronization
import ToolOpsCore

/// An operator action on a breaker.
public enum CircuitControl: Sendable, Hashable {
    /// Refuse every call until ``reset``.
    case forceOpen
    /// Let every call through and count nothing until ``reset``.
    case disable
    /// Back to closed with an empty window.
    case reset
}

/// What a breaker looks like right now.
public struct CircuitBreakerSnapshot: Sendable, Hashable {
    public var state: CircuitState
    public var counts: CircuitWindowCounts
    public var halfOpenInFlight: Int
    public init(state: CircuitState, counts: CircuitWindowCounts, halfOpenInFlight: Int) {
        self.state = state
        self.counts = counts
        self.halfOpenInFlight = halfOpenInFlight
    }
}

/// Where breaker state lives. A store one round trip away may answer ``admit`` from a local
/// view while the breaker is closed (the Redis store does), and batch ``record`` calls.
public protocol CircuitBreakerStore: Sendable {
    func admit(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitAdmission
    /// Records an outcome; returns the transition it caused, if any.
    func record(key: String, outcome: CallOutcome, probe: Bool, policy: CircuitBreakerPolicy) async throws -> CircuitTransition?
    /// ``record(key:outcome:probe:policy:)`` with the probe's half-open round
    /// (``CircuitAdmission/probeRound``): a probe whose round lapsed is not counted. Stores
    /// that do not implement it count every probe in the current round.
    func record(key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy) async throws -> CircuitTransition?
    func control(key: String, _ action: CircuitControl, policy: CircuitBreakerPolicy) async throws -> CircuitTransition?
    func snapshot(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitBreakerSnapshot
    /// An answer from local knowledge alone, if the store has one (the Redis store's view
    /// while the breaker is closed); `nil` means "ask ``admit(key:policy:)``". Lets wrappers
    /// skip their deadline machinery on the hot path.
    func admitLocally(key: String, policy: CircuitBreakerPolicy) -> CircuitAdmission?
    /// `true` when ``record(key:outcome:probe:policy:)`` never waits on I/O (it queues).
    var recordsWithoutWaiting: Bool { get }
}

extension CircuitBreakerStore {
    public func record(key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try await record(key: key, outcome: outcome, probe: probe, policy: policy)
    }
    public func admitLocally(key: String, policy: CircuitBreakerPolicy) -> CircuitAdmission? { nil }
    public var recordsWithoutWaiting: Bool { false }
}

/// A breaker store that admits and records without waiting (state in this process). The
/// middleware calls it directly, saving two async calls per call.
package protocol SynchronousCircuitBreakerStore: CircuitBreakerStore {
    /// `now`: the caller's reading of ``clock`` (saves a second reading), or `nil`.
    func admitNow(key: String, policy: CircuitBreakerPolicy, now: ClockInstant?) -> CircuitAdmission
    func recordNow(key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy, now: ClockInstant?) -> CircuitTransition?
    /// The clock the store decides on.
    var clock: any ToolOpsClock { get }
}

/// Breaker state in this process. The default store.
public final class MemoryCircuitBreakerStore: SynchronousCircuitBreakerStore {
    private let machines = Mutex<[String: CircuitBreakerStateMachine]>([:])
    package let clock: any ToolOpsClock

    public init(clock: any ToolOpsClock = SystemClock()) { self.clock = clock }

    public func admit(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitAdmission {
        admitNow(key: key, policy: policy, now: nil)
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        recordNow(key: key, outcome: outcome, probe: probe, round: 0, policy: policy, now: nil)
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        recordNow(key: key, outcome: outcome, probe: probe, round: round, policy: policy, now: nil)
    }

    package func admitNow(key: String, policy: CircuitBreakerPolicy, now: ClockInstant?) -> CircuitAdmission {
        let now = (now ?? clock.now).nanoseconds
        return machines.withLock { $0[key, default: CircuitBreakerStateMachine()].admit(now: now, policy: policy) }
    }

    package func recordNow(
        key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy, now: ClockInstant?
    ) -> CircuitTransition? {
        let now = (now ?? clock.now).nanoseconds
        return machines.withLock {
            $0[key, default: CircuitBreakerStateMachine()].record(outcome, probe: probe, round: round, now: now, policy: policy)
        }
    }

    public func control(key: String, _ action: CircuitControl, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        machines.withLock { machines in
            switch action {
            case .forceOpen: return machines[key, default: CircuitBreakerStateMachine()].forceOpen()
            case .disable: return machines[key, default: CircuitBreakerStateMachine()].disable()
            case .reset: return machines[key, default: CircuitBreakerStateMachine()].reset()
            }
        }
    }

    /// The state of the breaker stored under `key` (closed if unknown), without waiting.
    public func currentState(of key: String) -> CircuitState {
        machines.withLock { $0[key]?.state ?? .closed }
    }

    public func snapshot(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitBreakerSnapshot {
        let now = clock.now.nanoseconds
        return machines.withLock { machines in
            var machine = machines[key] ?? CircuitBreakerStateMachine()
            let counts = machine.windowCounts(now: now, policy: policy)
            return CircuitBreakerSnapshot(state: machine.state, counts: counts, halfOpenInFlight: machine.halfOpenInFlight)
        }
    }
}

/// Circuit breaking per tool (or any ``PolicyKey``).
///
/// ```swift
/// let breaker = CircuitBreakerMiddleware(.init(policy: try CircuitBreakerPolicy(failureRateThreshold: 0.5)))
/// ```
///
/// Cancellation is never a failure, nor are refusals by other policies (rate limit, open
/// breaker, full bulkhead) or invalid input; a custom ``Configuration/isFailure`` decides
/// the rest. State changes reach the observer after every lock is released.
public struct CircuitBreakerMiddleware: ToolMiddleware {
    public struct Configuration: Sendable {
        public var policy: CircuitBreakerPolicy
        /// Defaults to one breaker per tool.
        public var key: PolicyKey
        /// Whether an error counts as a failure. Defaults to every error.
        public var isFailure: @Sendable (any Error) -> Bool
        public var mode: PolicyMode
        /// Prefix of every breaker key in the store. Defaults to `cb`.
        public var keyPrefix: String
        public var observer: ResilienceObserver?

        public init(
            policy: CircuitBreakerPolicy, key: PolicyKey = .tool, isFailure: @escaping @Sendable (any Error) -> Bool = { _ in true },
            mode: PolicyMode = .enforce, keyPrefix: String = "cb", observer: ResilienceObserver? = nil
        ) {
            self.policy = policy
            self.key = key
            self.isFailure = isFailure
            self.mode = mode
            self.keyPrefix = keyPrefix
            self.observer = observer
        }
    }

    public let configuration: Configuration
    let store: any CircuitBreakerStore
    /// The same store when it answers without waiting (memory): called directly.
    let synchronousStore: (any SynchronousCircuitBreakerStore)?
    /// The synchronous store reads the same clock as this middleware: one reading serves both.
    let sharesClock: Bool
    let clock: any ToolOpsClock

    public init(_ configuration: Configuration, store: any CircuitBreakerStore = MemoryCircuitBreakerStore(), clock: any ToolOpsClock = SystemClock()) {
        self.configuration = configuration
        self.store = store
        self.synchronousStore = store as? any SynchronousCircuitBreakerStore
        self.sharesClock = synchronousStore.map { sameClock($0.clock, clock) } ?? false
        self.clock = clock
        self.storeKeyPrefix = "\(configuration.keyPrefix):\(configuration.key):"
    }

    package let storeKeyPrefix: String
    func storeKey(_ key: String) -> String { storeKeyPrefix + key }

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        let key = storeKey(configuration.key.key(for: call))
        let policy = configuration.policy
        let admission: CircuitAdmission
        var started: ClockInstant?
        if let synchronousStore {
            if sharesClock { started = clock.now }
            admission = synchronousStore.admitNow(key: key, policy: policy, now: started)
        } else {
            admission = try await store.admit(key: key, policy: policy)
        }
        if let transition = admission.transition { configuration.observer?(.circuitStateChanged(key: key, from: transition.from, to: transition.to)) }
        if !admission.allowed {
            configuration.observer?(.circuitRejected(tool: call.tool, key: key, retryAfter: admission.retryAfter, shadow: configuration.mode.isShadow))
            if !configuration.mode.isShadow {
                throw ToolOpsError(.circuitOpen, "circuit \(key) is open", retryAfter: admission.retryAfter)
            }
        }
        let start = started ?? clock.now
        let outcome: CallOutcome
        let result: Result<ToolResult, any Error>
        let ended: ClockInstant
        do {
            result = .success(try await next.run(call))
            ended = clock.now
            outcome = .success(duration: ended - start)
        } catch {
            result = .failure(error)
            ended = clock.now
            outcome = classify(error, duration: ended - start)
        }
        // Recording must not turn a tool's answer into a store error.
        let transition: CircuitTransition?
        if let synchronousStore {
            transition = synchronousStore.recordNow(
                key: key, outcome: outcome, probe: admission.probe, round: admission.probeRound, policy: policy,
                now: sharesClock ? ended : nil)
        } else {
            transition = try? await store.record(
                key: key, outcome: outcome, probe: admission.probe, round: admission.probeRound, policy: policy)
        }
        if let transition {
            configuration.observer?(.circuitStateChanged(key: key, from: transition.from, to: transition.to))
        }
        return try result.get()
    }

    func classify(_ error: any Error, duration: Duration) -> CallOutcome {
        if error is CancellationError { return .ignored }
        if let error = error as? ToolOpsError,
            [.rateLimited, .circuitOpen, .bulkheadFull, .invalidInput].contains(error.code)
        {
            return .ignored
        }
        return configuration.isFailure(error) ? .failure(duration: duration) : .success(duration: duration)
    }

    /// Applies an operator action to the breaker for `key` (a value of ``Configuration/key``).
    public func control(_ action: CircuitControl, key: String) async throws {
        let storeKey = storeKey(key)
        if let transition = try await store.control(key: storeKey, action, policy: configuration.policy) {
            configuration.observer?(.circuitStateChanged(key: storeKey, from: transition.from, to: transition.to))
        }
    }

    public func snapshot(key: String) async throws -> CircuitBreakerSnapshot {
        try await store.snapshot(key: storeKey(key), policy: configuration.policy)
    }

    /// The snapshot of a breaker by its store key (as in ``ResilienceEvent``s).
    package func snapshot(storeKey: String) async throws -> CircuitBreakerSnapshot {
        try await store.snapshot(key: storeKey, policy: configuration.policy)
    }
}

/// Whether two clocks give the same readings: both the host's monotonic clock, or the same instance.
func sameClock(_ a: any ToolOpsClock, _ b: any ToolOpsClock) -> Bool {
    if a is SystemClock && b is SystemClock { return true }
    if let a = a as? ManualClock, let b = b as? ManualClock { return a === b }
    return false
}
