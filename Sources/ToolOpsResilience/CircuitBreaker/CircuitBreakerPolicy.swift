import ToolOpsCore

/// A breaker's state.
public enum CircuitState: String, Sendable, Hashable, CaseIterable {
    /// Calls flow; outcomes are counted.
    case closed
    /// Calls are refused until the open duration has passed.
    case open
    /// A limited number of probe calls decide whether to close or reopen.
    case halfOpen = "half_open"
    /// Opened by an operator; stays open until reset.
    case forcedOpen = "forced_open"
    /// Switched off by an operator: everything passes, nothing is counted.
    case disabled
}

/// How a call ended, as far as a breaker is concerned.
public enum CallOutcome: Sendable, Hashable {
    case success(duration: Duration)
    case failure(duration: Duration)
    /// Neither (cancelled, refused by another policy): only frees a probe slot.
    case ignored
}

/// Breaker settings. Invalid values are refused at construction.
public struct CircuitBreakerPolicy: Sendable, Hashable {
    /// Which recent calls the failure rate is computed over.
    public struct Window: Sendable, Hashable, CustomStringConvertible {
        enum Kind: Hashable, Sendable { case count(Int), time(Duration) }
        let kind: Kind
        /// The last `n` calls.
        public static func count(_ n: Int) -> Window { Window(kind: .count(n)) }
        /// The calls of the last `duration` (kept in 20 buckets).
        public static func time(_ duration: Duration) -> Window { Window(kind: .time(duration)) }
        /// The duration of a time window; `nil` for a count window.
        public var duration: Duration? {
            if case .time(let duration) = kind { return duration }
            return nil
        }
        /// The size of a count window; `nil` for a time window.
        public var count: Int? {
            if case .count(let n) = kind { return n }
            return nil
        }
        public var description: String {
            switch kind {
            case .count(let n): return "last \(n) calls"
            case .time(let d): return "last \(d)"
            }
        }
    }

    /// Defaults to the last 100 calls.
    public var window: Window
    /// Failure rate (0…1) at or above which the breaker opens. Defaults to 0.5.
    public var failureRateThreshold: Double
    /// Calls at least this slow count as slow. Defaults to 10 s.
    public var slowCallDuration: Duration
    /// Slow-call rate (0…1) at or above which the breaker opens. Defaults to 1.0 (only when every call is slow).
    public var slowCallRateThreshold: Double
    /// Calls the window must hold before rates are judged. Defaults to 10.
    public var minimumCalls: Int
    /// How long the breaker stays open before admitting probes. Defaults to 30 s.
    public var openDuration: Duration
    /// Probe calls admitted in half-open; all must succeed to close, any failure reopens. Defaults to 3.
    public var permittedHalfOpenCalls: Int

    public init(
        window: Window = .count(100), failureRateThreshold: Double = 0.5, slowCallDuration: Duration = .seconds(10),
        slowCallRateThreshold: Double = 1.0, minimumCalls: Int = 10, openDuration: Duration = .seconds(30),
        permittedHalfOpenCalls: Int = 3
    ) throws(ToolOpsError) {
        switch window.kind {
        case .count(let n): try requireConfiguration(n >= 1 && n <= 100_000, "count window must be 1...100000, got \(n)")
        case .time(let d): try requireConfiguration(d >= .milliseconds(20), "time window must be at least 20 ms, got \(d)")
        }
        try requireConfiguration((0...1).contains(failureRateThreshold) && failureRateThreshold > 0,
            "failureRateThreshold must be in (0, 1], got \(failureRateThreshold)")
        try requireConfiguration((0...1).contains(slowCallRateThreshold) && slowCallRateThreshold > 0,
            "slowCallRateThreshold must be in (0, 1], got \(slowCallRateThreshold)")
        try requireConfiguration(slowCallDuration > .zero, "slowCallDuration must be positive")
        try requireConfiguration(minimumCalls >= 1, "minimumCalls must be at least 1, got \(minimumCalls)")
        try requireConfiguration(openDuration > .zero, "openDuration must be positive")
        try requireConfiguration(permittedHalfOpenCalls >= 1, "permittedHalfOpenCalls must be at least 1")
        self.window = window
        self.failureRateThreshold = failureRateThreshold
        self.slowCallDuration = slowCallDuration
        self.slowCallRateThreshold = slowCallRateThreshold
        self.minimumCalls = minimumCalls
        self.openDuration = openDuration
        self.permittedHalfOpenCalls = permittedHalfOpenCalls
    }
}
