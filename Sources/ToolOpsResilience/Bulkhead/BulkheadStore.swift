import ToolOpsCore

/// A slot in a bulkhead, returned to the store when the call ends.
public struct BulkheadPermit: Sendable, Hashable {
    public var key: String
    /// Unique per acquisition (a fencing token): releasing a permit twice, or releasing one
    /// that expired and was re-issued, can never free somebody else's slot.
    public var token: UInt64
    public init(key: String, token: UInt64) {
        self.key = key
        self.token = token
    }
}

/// Where bulkhead occupancy lives.
public protocol BulkheadStore: Sendable {
    /// Takes one of `limit` slots for `key`, waiting up to `maxWait` in FIFO order; throws
    /// ``ToolOpsError/Code/bulkheadFull`` when none frees up in time. `lease` bounds how long
    /// a permit of a crashed holder keeps its slot (stores shared between processes).
    func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit
    /// Returns a slot. Unknown or already released permits are ignored.
    func release(_ permit: BulkheadPermit) async
}

/// A bulkhead store that can take a free slot and release one without waiting (state in this
/// process). The middleware calls it directly on that path, saving two async calls per call.
package protocol SynchronousBulkheadStore: BulkheadStore {
    /// A permit if a slot is free and nobody is queued; `nil` means "ask
    /// ``BulkheadStore/acquire(key:limit:lease:maxWait:)``" (it refuses or queues).
    func acquireNow(key: String, limit: Int) -> BulkheadPermit?
    func releaseNow(_ permit: BulkheadPermit)
}
