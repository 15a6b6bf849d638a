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
