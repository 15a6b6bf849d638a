import ToolOpsCore

/// Rate-limit state in files: several processes on one host share the limits.
///
/// ```swift
/// let store = try FileRateLimitStore(directory: "/var/lib/toolops/ratelimit")
/// ```
public final class FileRateLimitStore: RateLimitStore {
    let files: FileStateDirectory
    let clock: any ToolOpsClock

    /// `clock` must be shared by all processes (``SystemClock`` is: it is the host's monotonic clock).
    public init(directory: String, clock: any ToolOpsClock = SystemClock()) throws(ToolOpsError) {
        self.files = try FileStateDirectory(path: directory)
        self.clock = clock
    }

    public func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        let keys = requests.map(\.key)
        return try files.update(keys) { states in
            let now = clock.now.nanoseconds
            var tats: [String: Int64] = [:]
            for (key, state) in zip(keys, states) {
                // A TAT absurdly far ahead is corrupt (or from a clock we do not share): drop it.
                if let tat = state?["tat"]?.int64Value, tat - now < 366 * 24 * 3_600_000_000_000 { tats[key] = tat }
            }
            let decisions = GCRA.apply(requests, maxWait: maxWait, now: now, tats: &tats)
            for (index, key) in keys.enumerated() {
                if let tat = tats[key] { states[index] = .object(["tat": .integer(tat)]) }
            }
            return decisions
        }
    }
}

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

/// Bulkhead leases in files: processes on one host share each bulkhead. A lease of a
/// process that died expires after its lease time. Waiting callers poll (1 ms doubling to
/// 25 ms), so order among waiters is not strictly FIFO across processes.
public final class FileBulkheadStore: BulkheadStore {
    let files: FileStateDirectory
    let clock: any ToolOpsClock

    public init(directory: String, clock: any ToolOpsClock = SystemClock()) throws(ToolOpsError) {
        self.files = try FileStateDirectory(path: directory)
        self.clock = clock
    }

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        let deadline = clock.now + maxWait
        var pause = Duration.milliseconds(1)
        while true {
            var generator = SystemRandomNumberGenerator()
            // Bit 63 marks permits of a fallback store (FallbackBulkheadStore); never use it.
            let token = (generator.next() as UInt64) & ~(1 << 63) | 1
            let granted: Bool = try files.update([key]) { states in
                let now = clock.now.nanoseconds
                var holders: [String: JSONValue] = [:]
                if case .object(let existing)? = states[0]?["holders"] {
                    holders = existing.filter { ($0.value.int64Value ?? 0) > now }  // expired leases free their slot
                }
                defer { states[0] = .object(["holders": .object(holders)]) }
                guard holders.count < limit else { return false }
                holders[String(token)] = .integer((clock.now + lease).nanoseconds)
                return true
            }
            if granted { return BulkheadPermit(key: key, token: token) }
            let now = clock.now
            if now >= deadline {
                throw ToolOpsError(.bulkheadFull, "bulkhead \(key) is full (\(limit) in use)")
            }
            try await clock.sleep(until: min(deadline, now + pause))
            pause = min(pause * 2, .milliseconds(25))
        }
    }

    public func release(_ permit: BulkheadPermit) async {
        _ = try? files.update([permit.key]) { states in
            guard case .object(var holders)? = states[0]?["holders"] else { return }
            holders[String(permit.token)] = nil  // an unknown token (expired, released) changes nothing else
            states[0] = .object(["holders": .object(holders)])
        }
    }
}
