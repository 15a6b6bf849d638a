import Synchronization
import ToolOpsCore

/// Breaker state in this process. The default store.
///
/// Keys may come from callers (a breaker per tenant), so the state is bounded: a breaker that
/// can no longer change a decision — closed with an empty window — is forgotten now and then,
/// and a new breaker finds a fresh closed one, exactly what it would have found. At most
/// ``Configuration/maximumKeys`` breakers are tracked; when that many are all live (open,
/// half-open, or closed with calls in their window) a new key is not tracked: its calls are
/// admitted and their outcomes dropped — a breaker that cannot track fails open.
public final class MemoryCircuitBreakerStore: SynchronousCircuitBreakerStore, SweepableStore {
    public struct Configuration: Sendable, Hashable {
        /// Breakers tracked at most. Defaults to 100,000 (~35 MB at worst).
        public var maximumKeys: Int
        public init(maximumKeys: Int = 100_000) { self.maximumKeys = max(1, maximumKeys) }
    }

    struct Entry {
        var machine: CircuitBreakerStateMachine
        /// The policy's time window (ns) when it has one, to tell when the window is empty.
        var timeWindow: Int64?
    }

    struct State {
        var entries: [String: Entry] = [:]
        var recordsSinceSweep = 0
        /// New keys not tracked because every tracked breaker was live.
        var untracked = 0
        /// After a sweep at the ceiling that freed nothing, the next is not tried before this
        /// (a refusal then costs no scan).
        var nextUsefulSweep: Int64 = .min
    }

    private let state = Mutex(State())
    package let clock: any ToolOpsClock
    public let configuration: Configuration

    public init(clock: any ToolOpsClock = SystemClock(), configuration: Configuration = .init()) {
        self.clock = clock
        self.configuration = configuration
    }

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
        return state.withLock { state in
            // An unknown breaker is a fresh closed one: it admits, and nothing need be stored.
            guard let index = state.entries.index(forKey: key) else {
                return CircuitAdmission(allowed: true, probe: false, retryAfter: .zero, transition: nil)
            }
            return state.entries.values[index].machine.admit(now: now, policy: policy)
        }
    }

    package func recordNow(
        key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy, now: ClockInstant?
    ) -> CircuitTransition? {
        let now = (now ?? clock.now).nanoseconds
        let maximum = configuration.maximumKeys
        return state.withLock { state in
            defer { Self.sweepNowAndThen(&state, now: now) }
            if let index = state.entries.index(forKey: key) {
                return state.entries.values[index].machine.record(outcome, probe: probe, round: round, now: now, policy: policy)
            }
            if case .ignored = outcome { return nil }  // changes nothing: no state to keep
            if state.entries.count >= maximum {
                if now >= state.nextUsefulSweep { Self.sweep(&state, now: now) }
                if state.entries.count >= maximum {
                    // Windows empty bucket by bucket: try again a bucket's width (1/20 window) later.
                    state.nextUsefulSweep = now &+ max(1_000_000, (policy.window.duration?.nanosecondsClamped ?? 1_000_000_000) / 20)
                    state.untracked += 1
                    return nil
                }
            }
            var entry = Entry(machine: CircuitBreakerStateMachine(), timeWindow: policy.window.duration?.nanosecondsClamped)
            let transition = entry.machine.record(outcome, probe: probe, round: round, now: now, policy: policy)
            state.entries[key] = entry
            return transition
        }
    }

    public func control(key: String, _ action: CircuitControl, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        // Operator actions are always kept, even over the ceiling: they are few, and dropping
        // a forced-open breaker would silently undo them.
        let window = policy.window.duration?.nanosecondsClamped
        return state.withLock { state in
            modify(&state.entries[key, default: Entry(machine: CircuitBreakerStateMachine(), timeWindow: window)]) { entry in
                switch action {
                case .forceOpen: return entry.machine.forceOpen()
                case .disable: return entry.machine.disable()
                case .reset: return entry.machine.reset()
                }
            }
        }
    }

    /// The state of the breaker stored under `key` (closed if unknown), without waiting.
    public func currentState(of key: String) -> CircuitState {
        state.withLock { $0.entries[key]?.machine.state ?? .closed }
    }

    public func snapshot(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitBreakerSnapshot {
        let now = clock.now.nanoseconds
        return state.withLock { state in
            var machine = state.entries[key]?.machine ?? CircuitBreakerStateMachine()
            let counts = machine.windowCounts(now: now, policy: policy)
            return CircuitBreakerSnapshot(state: machine.state, counts: counts, halfOpenInFlight: machine.halfOpenInFlight)
        }
    }

    // MARK: bounded state

    /// Breakers tracked now.
    public var keyCount: Int { state.withLock { $0.entries.count } }

    /// New breakers not tracked so far because every tracked one was live.
    public var untrackedKeys: Int { state.withLock { $0.untracked } }

    /// Forgets every breaker that can no longer change a decision (also done every 4,096
    /// records once more than 1,024 are tracked, and at the ceiling).
    @discardableResult
    public func sweep() -> Int {
        let now = clock.now.nanoseconds
        return state.withLock { state in
            let before = state.entries.count
            Self.sweep(&state, now: now)
            return before - state.entries.count
        }
    }

    private static func sweepNowAndThen(_ state: inout State, now: Int64) {
        state.recordsSinceSweep += 1
        if state.recordsSinceSweep >= 4096 && state.entries.count > 1024 { sweep(&state, now: now) }
    }

    private static func sweep(_ state: inout State, now: Int64) {
        state.recordsSinceSweep = 0
        var forgettable: [String] = []
        for index in state.entries.indices {
            let timeWindow = state.entries.values[index].timeWindow
            if state.entries.values[index].machine.isForgettable(now: now, timeWindow: timeWindow) {
                forgettable.append(state.entries.keys[index])
            }
        }
        for key in forgettable { state.entries[key] = nil }
    }
}
