import Synchronization
import ToolOpsCore

/// Retry settings. Invalid values are refused at construction.
public struct RetryPolicy: Sendable {
    /// How the nominal delay grows with the retry number `k` (1 for the first retry).
    public struct Backoff: Sendable, Hashable, CustomStringConvertible {
        enum Kind: Hashable, Sendable { case exponential(Double), linear, constant }
        let kind: Kind
        /// `initialDelay · multiplier^(k−1)`.
        public static func exponential(multiplier: Double = 2) -> Backoff { Backoff(kind: .exponential(multiplier)) }
        /// `initialDelay · k`.
        public static let linear = Backoff(kind: .linear)
        /// `initialDelay`.
        public static let constant = Backoff(kind: .constant)
        public var description: String { "\(kind)" }
    }

    /// How randomness spreads retries (always within `0…maxDelay`).
    public struct Jitter: Sendable, Hashable, CustomStringConvertible {
        enum Kind: Hashable, Sendable { case none, full, equal, decorrelated }
        let kind: Kind
        public static let none = Jitter(kind: .none)
        /// Uniform in `[0, d]`.
        public static let full = Jitter(kind: .full)
        /// Uniform in `[d/2, d]`.
        public static let equal = Jitter(kind: .equal)
        /// Uniform in `[initialDelay, 3 · previous delay]`, capped (AWS "decorrelated jitter").
        public static let decorrelated = Jitter(kind: .decorrelated)
        public var description: String { "\(kind)" }
    }

    /// Attempts in total, the first call included. Defaults to 3.
    public var maxAttempts: Int
    /// Defaults to 100 ms.
    public var initialDelay: Duration
    /// No delay exceeds this, jitter included. Defaults to 10 s.
    public var maxDelay: Duration
    /// Defaults to exponential ×2.
    public var backoff: Backoff
    /// Defaults to ``Jitter/full``.
    public var jitter: Jitter
    /// Whether an error is worth retrying. The default retries everything except
    /// cancellation, invalid input, an open breaker and a full bulkhead; a rate-limit refusal
    /// is retried after its retry-after when that fits within `maxDelay`.
    public var retryIf: @Sendable (any Error) -> Bool

    public init(
        maxAttempts: Int = 3, initialDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(10),
        backoff: Backoff = .exponential(), jitter: Jitter = .full,
        retryIf: @escaping @Sendable (any Error) -> Bool = RetryPolicy.defaultRetryIf
    ) throws(ToolOpsError) {
        try requireConfiguration(maxAttempts >= 1 && maxAttempts <= 100, "maxAttempts must be 1...100, got \(maxAttempts)")
        try requireConfiguration(initialDelay >= .zero, "initialDelay must not be negative")
        try requireConfiguration(maxDelay >= initialDelay, "maxDelay must be at least initialDelay")
        if case .exponential(let multiplier) = backoff.kind {
            try requireConfiguration(multiplier >= 1 && multiplier.isFinite, "multiplier must be ≥ 1, got \(multiplier)")
        }
        self.maxAttempts = maxAttempts
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.backoff = backoff
        self.jitter = jitter
        self.retryIf = retryIf
    }

    public static let defaultRetryIf: @Sendable (any Error) -> Bool = { error in
        if error is CancellationError { return false }
        if let error = error as? ToolOpsError {
            return ![.invalidInput, .circuitOpen, .bulkheadFull, .invalidConfiguration, .retriesExhausted].contains(error.code)
        }
        return true
    }

    /// The delay before retry `k` (1-based) given the previous delay; always within `0…maxDelay`.
    public func delay<G: RandomNumberGenerator>(retry k: Int, previous: Duration, using generator: inout G) -> Duration {
        let initial = initialDelay.secondsDouble
        let cap = maxDelay.secondsDouble
        let nominal: Double
        switch backoff.kind {
        case .exponential(let multiplier): nominal = initial * pow(multiplier, Double(k - 1))
        case .linear: nominal = initial * Double(k)
        case .constant: nominal = initial
        }
        let capped = min(cap, nominal.isFinite ? nominal : cap)
        let jittered: Double
        switch jitter.kind {
        case .none: jittered = capped
        case .full: jittered = Double.random(in: 0...capped, using: &generator)
        case .equal: jittered = capped / 2 + Double.random(in: 0...(capped / 2), using: &generator)
        case .decorrelated:
            let upper = max(initial, min(cap, previous.secondsDouble * 3))
            jittered = Double.random(in: initial...upper, using: &generator)
        }
        return .nanoseconds(Int64(min(cap, max(0, jittered)) * 1e9))
    }

    private func pow(_ base: Double, _ exponent: Double) -> Double {
        var result = 1.0
        var remaining = Int(exponent)
        while remaining > 0 && result.isFinite {
            result *= base
            remaining -= 1
        }
        return result
    }
}

/// Caps retries at a share of calls so a struggling dependency is not hit by a retry storm:
/// over a sliding `window`, retries may not exceed `minimumPerSecond · window + ratio · calls`.
public final class RetryBudget: Sendable {
    struct State {
        var buckets: [(second: Int64, calls: Int, retries: Int)] = []
    }
    public let ratio: Double
    public let minimumPerSecond: Int
    public let window: Duration
    private let state = Mutex(State())
    private let clock: any ToolOpsClock

    /// - Parameters:
    ///   - ratio: retries allowed per call. Defaults to 0.2.
    ///   - minimumPerSecond: retries always allowed per second, so low traffic can still retry. Defaults to 10.
    ///   - window: defaults to 10 s.
    public init(ratio: Double = 0.2, minimumPerSecond: Int = 10, window: Duration = .seconds(10), clock: any ToolOpsClock = SystemClock()) throws(ToolOpsError) {
        try requireConfiguration(ratio >= 0 && ratio.isFinite, "retry budget ratio must be ≥ 0")
        try requireConfiguration(minimumPerSecond >= 0, "minimumPerSecond must be ≥ 0")
        try requireConfiguration(window >= .seconds(1), "retry budget window must be at least 1 s")
        self.ratio = ratio
        self.minimumPerSecond = minimumPerSecond
        self.window = window
        self.clock = clock
    }

    func recordCall() { update { $0.calls += 1 } }

    /// Takes a retry from the budget; `false` when it is spent.
    func tryRetry() -> Bool {
        let now = clock.now.nanoseconds / 1_000_000_000
        let windowSeconds = max(1, window.nanosecondsClamped / 1_000_000_000)
        return state.withLock { state in
            prune(&state, now: now, windowSeconds: windowSeconds)
            let calls = state.buckets.reduce(0) { $0 + $1.calls }
            let retries = state.buckets.reduce(0) { $0 + $1.retries }
            let allowed = Double(minimumPerSecond) * Double(windowSeconds) + ratio * Double(calls)
            guard Double(retries) + 1 <= allowed else { return false }
            touch(&state, now: now)
            state.buckets[state.buckets.count - 1].retries += 1
            return true
        }
    }

    private func update(_ body: (inout (second: Int64, calls: Int, retries: Int)) -> Void) {
        let now = clock.now.nanoseconds / 1_000_000_000
        let windowSeconds = max(1, window.nanosecondsClamped / 1_000_000_000)
        state.withLock { state in
            prune(&state, now: now, windowSeconds: windowSeconds)
            touch(&state, now: now)
            body(&state.buckets[state.buckets.count - 1])
        }
    }

    private func touch(_ state: inout State, now: Int64) {
        if state.buckets.last?.second != now { state.buckets.append((now, 0, 0)) }
    }

    private func prune(_ state: inout State, now: Int64, windowSeconds: Int64) {
        if let first = state.buckets.firstIndex(where: { $0.second > now - windowSeconds }) {
            if first > 0 { state.buckets.removeFirst(first) }
        } else {
            state.buckets.removeAll()
        }
    }
}

/// Retries failed calls with back-off.
///
/// Put it outside the breaker, bulkhead and timeout (see ``ToolPipeline``): each attempt
/// then passes the breaker, takes a bulkhead slot only while it runs, and has its own timeout.
public struct RetryMiddleware: ToolMiddleware {
    public struct Configuration: Sendable {
        public var policy: RetryPolicy
        /// Optional guard against retry storms. Defaults to none.
        public var budget: RetryBudget?
        public var mode: PolicyMode
        public var observer: ResilienceObserver?
        public init(policy: RetryPolicy, budget: RetryBudget? = nil, mode: PolicyMode = .enforce, observer: ResilienceObserver? = nil) {
            self.policy = policy
            self.budget = budget
            self.mode = mode
            self.observer = observer
        }
    }

    public let configuration: Configuration
    let clock: any ToolOpsClock

    public init(_ configuration: Configuration, clock: any ToolOpsClock = SystemClock()) {
        self.configuration = configuration
        self.clock = clock
    }

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        let policy = configuration.policy
        configuration.budget?.recordCall()
        var generator = SystemRandomNumberGenerator()
        var previousDelay = policy.initialDelay
        var attempt = 1
        while true {
            try Task.checkCancellation()
            do {
                return try await next.run(call)
            } catch {
                guard policy.retryIf(error) else { throw error }
                if attempt >= policy.maxAttempts {
                    if policy.maxAttempts == 1 { throw error }
                    throw ToolOpsError(.retriesExhausted, "\(call.tool) failed after \(attempt) attempts", attempts: attempt, underlying: error)
                }
                var delay = policy.delay(retry: attempt, previous: previousDelay, using: &generator)
                if let hint = (error as? ToolOpsError)?.retryAfter {
                    // A retry-after longer than we are willing to wait: give up now.
                    if hint > policy.maxDelay { throw error }
                    delay = max(delay, hint)
                }
                if configuration.mode.isShadow {
                    configuration.observer?(.retrying(tool: call.tool, attempt: attempt + 1, delay: delay, error: error, shadow: true))
                    throw error
                }
                if let budget = configuration.budget, !budget.tryRetry() {
                    configuration.observer?(.retryBudgetExhausted(tool: call.tool))
                    throw ToolOpsError(.retriesExhausted, "retry budget exhausted for \(call.tool)", attempts: attempt, underlying: error)
                }
                configuration.observer?(.retrying(tool: call.tool, attempt: attempt + 1, delay: delay, error: error, shadow: false))
                try await clock.sleep(for: delay)
                previousDelay = delay
                attempt += 1
            }
        }
    }
}
