import ToolOpsCore

/// A slot in a bulkhead, returned to the store when the call ends.
public struct BulkheadPermit: Sendable, Hashable {
    public var key: String
    /// Unique per acquisition (a fencing token): releasing a permit twice, or releasing one
    /// that expired and was re-issued, can never free somebody else's slot.
    public var token: UInt64
    /// Whether the store renews this permit's lease itself while it is held (decided when it
    /// was granted; see ``BulkheadStore/renewsLease(of:)``). It saves the middleware asking
    /// the store again on every call. Not part of the permit's identity.
    public var renewedByStore: Bool

    public init(key: String, token: UInt64, renewedByStore: Bool = false) {
        self.key = key
        self.token = token
        self.renewedByStore = renewedByStore
    }

    public static func == (lhs: BulkheadPermit, rhs: BulkheadPermit) -> Bool { lhs.key == rhs.key && lhs.token == rhs.token }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(key)
        hasher.combine(token)
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
    /// Whether permits lapse after their lease (stores shared between processes): then a call
    /// that outlives its lease must ``renew(_:lease:)`` it, or its slot is handed out again.
    var leasesExpire: Bool { get }
    /// Extends a held permit's lease to `lease` from now. Returns `false` if the permit has
    /// already lapsed (its slot may be someone else's now).
    func renew(_ permit: BulkheadPermit, lease: Duration) async throws -> Bool
    /// Whether the store itself keeps `permit`'s lease alive while it is held (a service of
    /// its own renews the leases of calls in flight), so the caller need not renew it.
    func renewsLease(of permit: BulkheadPermit) -> Bool
}

extension BulkheadStore {
    /// Permits held in this process do not lapse.
    public var leasesExpire: Bool { false }
    public func renew(_ permit: BulkheadPermit, lease: Duration) async throws -> Bool { true }
    /// The caller renews (when ``leasesExpire``).
    public func renewsLease(of permit: BulkheadPermit) -> Bool { false }
}

/// A bulkhead store that can sometimes grant a slot from state in this process (Redis: a slot
/// this replica kept from a call that just ended) without waiting; otherwise the caller asks
/// ``BulkheadStore/acquire(key:limit:lease:maxWait:)``. Saves the async call, the failover's
/// deadline and its task on most calls of a busy bulkhead.
package protocol LocallyAcquiringBulkheadStore: BulkheadStore {
    /// A permit for a caller that does not wait, if one can be granted now; `nil` changes nothing.
    func acquireLocally(key: String, limit: Int, lease: Duration) -> BulkheadPermit?
}

/// A bulkhead store that can take a free slot and release one without waiting (state in this
/// process). The middleware calls it directly on that path, saving two async calls per call.
package protocol SynchronousBulkheadStore: BulkheadStore {
    /// A permit if a slot is free and nobody is queued; `nil` means "ask
    /// ``BulkheadStore/acquire(key:limit:lease:maxWait:)``" (it refuses or queues).
    func acquireNow(key: String, limit: Int) -> BulkheadPermit?
    func releaseNow(_ permit: BulkheadPermit)
}
