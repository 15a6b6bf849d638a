import ToolOpsCore

/// Circuit-breaker state in files: processes on one host share each breaker.
public final class FileCircuitBreakerStore: CircuitBreakerStore {
    let files: FileStateDirectory
    let clock: any ToolOpsClock

    public init(directory: String, clock: any ToolOpsClock = SystemClock()) throws(ToolOpsError) {
        self.files = try FileStateDirectory(path: directory)
        self.clock = clock
    }

    private func withMachine<R>(_ key: String, _ body: (inout CircuitBreakerStateMachine, Int64) -> R) throws -> R {
        try files.update([key]) { states in
            var machine = states[0].flatMap(CircuitBreakerStateMachine.init(json:)) ?? CircuitBreakerStateMachine()
            let result = body(&machine, clock.now.nanoseconds)
            states[0] = machine.json
            return result
        }
    }

    public func admit(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitAdmission {
        try withMachine(key) { machine, now in machine.admit(now: now, policy: policy) }
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try await record(key: key, outcome: outcome, probe: probe, round: 0, policy: policy)
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try withMachine(key) { machine, now in machine.record(outcome, probe: probe, round: round, now: now, policy: policy) }
    }

    public func control(key: String, _ action: CircuitControl, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try withMachine(key) { machine, _ in
            switch action {
            case .forceOpen: return machine.forceOpen()
            case .disable: return machine.disable()
            case .reset: return machine.reset()
            }
        }
    }

    public func snapshot(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitBreakerSnapshot {
        try withMachine(key) { machine, now in
            let counts = machine.windowCounts(now: now, policy: policy)
            return CircuitBreakerSnapshot(state: machine.state, counts: counts, halfOpenInFlight: machine.halfOpenInFlight)
        }
    }
}
