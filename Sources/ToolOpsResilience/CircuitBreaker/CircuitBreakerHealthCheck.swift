import Synchronization
import ToolOpsCore

/// The circuit breakers as one check: `degraded` while any breaker is open, half-open or
/// forced open (the dependency behind it is failing, but the replica still serves other
/// tools), `healthy` otherwise.
///
/// Breakers are keyed per tool or per call, so the check learns about them from
/// ``ResilienceEvent``s: pass ``observer`` as the breaker's observer. A breaker opened on another
/// replica shows up here when this replica rejects a call for it. Before reporting, breakers
/// that look open are looked up again through the breakers given to ``watch(_:)``, so a breaker
/// that closed elsewhere (or expired) does not stay "open" here.
///
/// ```swift
/// let breakers = CircuitBreakerHealthCheck()
/// let breaker = CircuitBreakerMiddleware(.init(policy: policy, observer: breakers.observer), store: store)
/// breakers.watch(breaker)
/// try health.register("circuit-breakers", breakers)
/// ```
public final class CircuitBreakerHealthCheck: HealthCheck {
    struct State {
        var suspects: [String: CircuitState] = [:]
        var breakers: [CircuitBreakerMiddleware] = []
    }

    let state = Mutex(State())
    /// At most this many breakers are tracked (and listed), so memory stays bounded however
    /// many keys callers mint. Beyond it a newly opened breaker is not tracked until a tracked
    /// one closes (the check is `degraded` meanwhile anyway); a rejection by it later tracks it.
    public let maximumTracked: Int

    public init(maximumTracked: Int = 1_000) { self.maximumTracked = max(1, maximumTracked) }

    /// Feed this to each breaker's ``CircuitBreakerMiddleware/Configuration/observer``
    /// (call it from your own observer if you have one).
    public var observer: ResilienceObserver { { [self] event in observe(event) } }

    /// Lets the check look breakers up in their store (a Redis store sees other replicas' changes).
    public func watch(_ breaker: CircuitBreakerMiddleware) {
        state.withLock { $0.breakers.append(breaker) }
    }

    public func observe(_ event: ResilienceEvent) {
        switch event {
        case .circuitStateChanged(let key, _, let to):
            note(key, to)
        case .circuitRejected(_, let key, _, _):
            state.withLock { state in
                if state.suspects[key] == nil { Self.insert(&state, key, .open, limit: maximumTracked) }
            }
        default:
            break
        }
    }

    func note(_ key: String, _ to: CircuitState) {
        state.withLock { state in
            if to == .closed || to == .disabled {
                state.suspects[key] = nil
            } else {
                Self.insert(&state, key, to, limit: maximumTracked)
            }
        }
    }

    static func insert(_ state: inout State, _ key: String, _ value: CircuitState, limit: Int) {
        if state.suspects[key] != nil || state.suspects.count < limit { state.suspects[key] = value }
    }

    public func check() async throws -> HealthCheckResult {
        let (suspects, breakers) = state.withLock { ($0.suspects, $0.breakers) }
        var open: [String: CircuitState] = [:]
        for (key, believed) in suspects {
            try Task.checkCancellation()
            // Longest prefix wins: prefixes such as "cb:tool:" and "cb:tool:x:" may both match.
            let owner = breakers.filter { key.hasPrefix($0.storeKeyPrefix) }.max { $0.storeKeyPrefix.count < $1.storeKeyPrefix.count }
            var current = believed
            if let owner, let snapshot = try? await owner.snapshot(storeKey: key) {
                current = snapshot.state
                // Only forget what is still what we looked up (an event may have arrived meanwhile).
                if current == .closed || current == .disabled {
                    state.withLock { if $0.suspects[key] == believed { $0.suspects[key] = nil } }
                }
            }
            if current != .closed && current != .disabled { open[key] = current }
        }
        let details = open.mapValues { JSONValue.string($0.rawValue) }
        if open.isEmpty { return .healthy("no open circuits") }
        let names = open.keys.sorted()
        let listed = names.prefix(5).joined(separator: ", ") + (names.count > 5 ? ", …" : "")
        return .degraded("\(open.count) circuit(s) not closed: \(listed)", details: details)
    }
}
