import Synchronization
import ToolOpsCore

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
