import ToolOpsCore

/// Bulkhead leases in files: processes on one host share each bulkhead. A lease of a
/// process that died expires after its lease time. Waiting callers poll (1 ms doubling to
/// 25 ms), so order among waiters is not strictly FIFO across processes.
public final class FileBulkheadStore: BulkheadStore, SweepableStore {
    /// The directory the state lives in (for its file count, or to sweep it).
    public let files: FileStateDirectory
    let clock: any ToolOpsClock

    ///
    /// At ``FileStateDirectory/Configuration/maximumKeys`` bulkheads in use, a call for a new
    /// key is refused with `bulkheadFull`.
    public init(
        directory: String, clock: any ToolOpsClock = SystemClock(), configuration: FileStateDirectory.Configuration = .init()
    ) throws(ToolOpsError) {
        self.files = try FileStateDirectory(path: directory, configuration: configuration)
        self.clock = clock
    }

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        defer { if files.sweepDue() { sweep() } }
        let deadline = clock.now + maxWait
        var pause = Duration.milliseconds(1)
        while true {
            var generator = SystemRandomNumberGenerator()
            // Bit 63 marks permits of a fallback store (FallbackBulkheadStore); never use it.
            let token = (generator.next() as UInt64) & ~(1 << 63) | 1
            let granted: Bool? = try files.update([key]) { states in
                let now = clock.now.nanoseconds
                if states[0] == nil && !files.roomForNewKey(sweep: { sweep() }) { return nil }
                var holders: [String: JSONValue] = [:]
                if case .object(let existing)? = states[0]?["holders"] {
                    holders = existing.filter { ($0.value.int64Value ?? 0) > now }  // expired leases free their slot
                }
                defer { states[0] = holders.isEmpty && states[0] == nil ? nil : .object(["holders": .object(holders)]) }
                guard holders.count < limit else { return false }
                holders[String(token)] = .integer((clock.now + lease).nanoseconds)
                return true
            }
            guard let granted else {
                throw ToolOpsError(.bulkheadFull, "bulkhead \(key) refused: \(files.configuration.maximumKeys) bulkheads are in use (maximumKeys)")
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

    /// Removes the files of bulkheads with no lease in force (they decide like unknown ones).
    /// Done by itself every 4,096 acquisitions of this process or a minute after the last
    /// sweep; returns the keys removed.
    @discardableResult
    public func sweep() -> Int {
        let now = clock.now.nanoseconds
        return files.sweep { state in
            guard case .object(let holders)? = state["holders"] else { return true }
            return holders.values.allSatisfy { ($0.int64Value ?? 0) <= now }
        }
    }

    /// Leases lapse: a process that died frees its slots.
    public var leasesExpire: Bool { true }

    public func renew(_ permit: BulkheadPermit, lease: Duration) async throws -> Bool {
        try files.update([permit.key]) { states in
            guard case .object(var holders)? = states[0]?["holders"],
                let expiry = holders[String(permit.token)]?.int64Value, expiry > clock.now.nanoseconds
            else { return false }
            holders[String(permit.token)] = .integer((clock.now + lease).nanoseconds)
            states[0] = .object(["holders": .object(holders)])
            return true
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
