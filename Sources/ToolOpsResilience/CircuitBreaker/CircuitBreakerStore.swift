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
