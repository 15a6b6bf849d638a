import ToolOpsCore

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
    // A clock that is a class (a manual test clock) reads the same only as the same instance.
    if type(of: a) is AnyClass && type(of: b) is AnyClass { return (a as AnyObject) === (b as AnyObject) }
    return false
}
