import ToolOpsCore

/// Circuit-breaker state in files: processes on one host share each breaker.
public final class FileCircuitBreakerStore: CircuitBreakerStore, SweepableStore {
    /// The directory the state lives in (for its file count, or to sweep it).
    public let files: FileStateDirectory
    let clock: any ToolOpsClock

    ///
    /// At ``FileStateDirectory/Configuration/maximumKeys`` live breakers, a new breaker is not
    /// tracked: its calls are admitted and their outcomes dropped (a breaker fails open).
    public init(
        directory: String, clock: any ToolOpsClock = SystemClock(), configuration: FileStateDirectory.Configuration = .init()
    ) throws(ToolOpsError) {
        self.files = try FileStateDirectory(path: directory, configuration: configuration)
        self.clock = clock
    }

    private func withMachine<R>(
        _ key: String, policy: CircuitBreakerPolicy, _ body: (inout CircuitBreakerStateMachine, Int64) -> R
    ) throws -> R {
        defer { if files.sweepDue() { sweep() } }
        return try files.update([key]) { states in
            var machine = states[0].flatMap(CircuitBreakerStateMachine.init(json:)) ?? CircuitBreakerStateMachine()
            let result = body(&machine, clock.now.nanoseconds)
            // A breaker still as fresh as an unknown one needs no file; at the ceiling a new
            // one gets none (untracked).
            if states[0] == nil && (machine == CircuitBreakerStateMachine() || !files.roomForNewKey(sweep: { sweep() })) {
                return result
            }
            // The policy's time window goes with the state, so a sweep can tell an empty window.
            var json = machine.json
            if case .object(var fields) = json, let window = policy.window.duration {
                fields["timeWindow"] = .integer(window.nanosecondsClamped)
                json = .object(fields)
            }
            states[0] = json
            return result
        }
    }

    /// Removes the files of breakers that can no longer change a decision (closed, empty
    /// window). Done by itself every 4,096 updates of this process or a minute after the last
    /// sweep; returns the keys removed.
    @discardableResult
    public func sweep() -> Int {
        let now = clock.now.nanoseconds
        return files.sweep { state in
            guard var machine = CircuitBreakerStateMachine(json: state) else { return true }
            return machine.isForgettable(now: now, timeWindow: state["timeWindow"]?.int64Value)
        }
    }

    public func admit(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitAdmission {
        try withMachine(key, policy: policy) { machine, now in machine.admit(now: now, policy: policy) }
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try await record(key: key, outcome: outcome, probe: probe, round: 0, policy: policy)
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try withMachine(key, policy: policy) { machine, now in machine.record(outcome, probe: probe, round: round, now: now, policy: policy) }
    }

    public func control(key: String, _ action: CircuitControl, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try withMachine(key, policy: policy) { machine, _ in
            switch action {
            case .forceOpen: return machine.forceOpen()
            case .disable: return machine.disable()
            case .reset: return machine.reset()
            }
        }
    }

    public func snapshot(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitBreakerSnapshot {
        try withMachine(key, policy: policy) { machine, now in
            let counts = machine.windowCounts(now: now, policy: policy)
            return CircuitBreakerSnapshot(state: machine.state, counts: counts, halfOpenInFlight: machine.halfOpenInFlight)
        }
    }
}
