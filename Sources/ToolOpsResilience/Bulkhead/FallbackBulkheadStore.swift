import ToolOpsCore

/// A bulkhead store that uses a shared store (Redis) and, when it is unreachable, the
/// declared ``DegradedMode`` (local: the fallback store with `limit × scale` slots). Permits
/// are released to the store that issued them.
public final class FallbackBulkheadStore: LocallyAcquiringBulkheadStore, FailoverFallbackStore {
    public let primary: any BulkheadStore
    /// The primary when it can sometimes grant at once (Redis: a kept slot).
    let locallyAcquiring: (any LocallyAcquiringBulkheadStore)?
    public let fallback: any BulkheadStore
    package let failover: StoreFailover
    /// Permits from the fallback store carry this bit, so releases find their way back.
    static let localBit: UInt64 = 1 << 63

    public init(
        primary: any BulkheadStore, fallback: any BulkheadStore = MemoryBulkheadStore(), mode: DegradedMode = .local(),
        deadline: Duration = .milliseconds(100), probeInterval: Duration = .seconds(1),
        clock: any ToolOpsClock = SystemClock(), name: String = "bulkhead", observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) {
        self.primary = primary
        self.locallyAcquiring = primary as? any LocallyAcquiringBulkheadStore
        self.fallback = fallback
        self.failover = try StoreFailover(
            name: name, mode: mode, deadline: deadline, probeInterval: probeInterval, clock: clock, observer: observer.map(ResilienceEvent.forwarding))
    }

    /// The primary's local grant (a kept slot) while it is healthy; degraded: `nil`.
    package func acquireLocally(key: String, limit: Int, lease: Duration) -> BulkheadPermit? {
        guard let locallyAcquiring, !failover.isDegraded else { return nil }
        return locallyAcquiring.acquireLocally(key: key, limit: limit, lease: lease)
    }

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        let primary = self.primary
        // The deadline bounds reaching the store, on top of any wait for a slot.
        if let permit = try await failover.attempt(extra: maxWait, {
            try await primary.acquire(key: key, limit: limit, lease: lease, maxWait: maxWait)
        }) {
            return permit
        }
        switch failover.mode.kind {
        case .failOpen:
            return BulkheadPermit(key: key, token: 0)
        case .failClosed:
            throw ToolOpsError(.bulkheadFull, "bulkhead \(key) refuses calls while its store is unavailable")
        case .local(let scale):
            let scaled = max(1, Int((Double(limit) * scale).rounded(.down)))
            let permit = try await fallback.acquire(key: key, limit: scaled, lease: lease, maxWait: maxWait)
            return BulkheadPermit(key: key, token: permit.token | Self.localBit)
        }
    }

    public var leasesExpire: Bool { primary.leasesExpire || fallback.leasesExpire }

    /// Renewed with the store that issued the permit (a fail-open pass has nothing to renew).
    public func renew(_ permit: BulkheadPermit, lease: Duration) async throws -> Bool {
        if permit.token == 0 { return true }
        if permit.token & Self.localBit != 0 {
            return try await fallback.renew(BulkheadPermit(key: permit.key, token: permit.token & ~Self.localBit), lease: lease)
        }
        return try await primary.renew(permit, lease: lease)
    }

    /// The store that issued the permit renews it (a fail-open pass has nothing to renew).
    public func renewsLease(of permit: BulkheadPermit) -> Bool {
        if permit.token == 0 { return true }
        if permit.token & Self.localBit != 0 {
            return !fallback.leasesExpire || fallback.renewsLease(of: BulkheadPermit(key: permit.key, token: permit.token & ~Self.localBit))
        }
        return primary.renewsLease(of: permit)
    }

    public func release(_ permit: BulkheadPermit) async {
        if permit.token == 0 { return }  // a fail-open pass
        if permit.token & Self.localBit != 0 {
            await fallback.release(BulkheadPermit(key: permit.key, token: permit.token & ~Self.localBit))
        } else {
            await primary.release(permit)
        }
    }
}
