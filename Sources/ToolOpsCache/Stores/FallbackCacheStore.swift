import ToolOpsCore

/// A cache store that uses a shared store (Redis) and, while it is unreachable, a local one.
///
/// Modes: ``DegradedMode/local(scale:)`` (the scale is ignored) serves and fills the
/// fallback store (memory or file); ``DegradedMode/failOpen`` runs without a cache (every
/// lookup misses, writes are dropped). ``DegradedMode/failClosed`` is rejected: a cache
/// outage must never refuse calls. Reads and writes wait at most `deadline` for the shared
/// store; one call per `probeInterval` tries it again. When the shared store is back, the
/// fallback store is emptied: it missed the invalidations made meanwhile and must not serve
/// them during the next outage.
public final class FallbackCacheStore: CacheStore, CacheFillCoordinator, FailoverFallbackStore {
    public let primary: any CacheStore
    public let fallback: any CacheStore
    package let failover: StoreFailover
    /// Also empties the fallback store after a successful probe (see the type's documentation).
    public func runProbes(check: @escaping @Sendable () async throws -> Void) async {
        await failover.runProbes { [fallback] in
            try await check()
            try await fallback.removeAll()
        }
    }

    /// - Parameters:
    ///   - mode: defaults to ``DegradedMode/local(scale:)``.
    ///   - deadline: longest wait for the shared store per operation. Defaults to 100 ms.
    ///   - probeInterval: how often a degraded store is retried. Defaults to 1 s.
    public init(
        primary: any CacheStore, fallback: any CacheStore = MemoryCacheStore(), mode: DegradedMode = .local(),
        deadline: Duration = .milliseconds(100), probeInterval: Duration = .seconds(1),
        clock: any ToolOpsClock = SystemClock(), name: String = "cache", observer: FailoverObserver? = nil
    ) throws(ToolOpsError) {
        guard mode != .failClosed else {
            throw ToolOpsError(.invalidConfiguration, "a cache cannot fail closed: use .local() or .failOpen")
        }
        self.primary = primary
        self.fallback = fallback
        self.failover = try StoreFailover(
            name: name, mode: mode, deadline: deadline, probeInterval: probeInterval, clock: clock, observer: observer)
    }

    var usesFallback: Bool { mode != .failOpen }

    /// Runs `operation` on the primary; `nil` when the degraded mode applies.
    private func primary<T: Sendable>(_ operation: @escaping @Sendable (any CacheStore) async throws -> T) async throws -> T? {
        let wasDegraded = failover.isDegraded
        let primary = self.primary
        guard let value = try await failover.attempt({ try await operation(primary) }) else { return nil }
        if wasDegraded && !failover.isDegraded { try? await fallback.removeAll() }
        return value
    }

    public func get(_ key: CacheKey) async throws -> CacheEntry? {
        if let found = try await primary({ try await $0.get(key) }) { return found }
        return usesFallback ? try await fallback.get(key) : nil
    }

    public func set(_ key: CacheKey, _ entry: CacheEntry, encodedValue: [UInt8]?) async throws {
        if try await primary({ try await $0.set(key, entry, encodedValue: encodedValue) }) != nil { return }
        if usesFallback { try await fallback.set(key, entry, encodedValue: encodedValue) }
    }

    // Invalidations go to both stores (the fallback may hold copies from an earlier outage)
    // and reach the shared store without the per-call deadline: a large one takes many
    // batches, and a caller must learn when it did not reach the cluster (the error is thrown).

    public func delete(_ key: CacheKey) async throws {
        if usesFallback { try await fallback.delete(key) }
        try await primary.delete(key)
    }

    @discardableResult
    public func invalidate(tag: String) async throws -> Int {
        if usesFallback { try await fallback.invalidate(tag: tag) }
        return try await primary.invalidate(tag: tag)
    }

    @discardableResult
    public func invalidate(tool: ToolID) async throws -> Int {
        if usesFallback { try await fallback.invalidate(tool: tool) }
        return try await primary.invalidate(tool: tool)
    }

    public func removeAll() async throws {
        if usesFallback { try await fallback.removeAll() }
        try await primary.removeAll()
    }

    // MARK: CacheFillCoordinator (forwarded while the primary coordinates)

    public func acquireFill(_ key: CacheKey, lease: Duration) async throws -> CacheFillLease? {
        guard let coordinator = primary as? any CacheFillCoordinator else { return CacheFillLease(key: key, token: "local") }
        // Degraded: no cluster-wide election; single-flight still holds in this process.
        return try await primary { _ in try await coordinator.acquireFill(key, lease: lease) } ?? CacheFillLease(key: key, token: "local")
    }

    public func releaseFill(_ lease: CacheFillLease) async {
        guard lease.token != "local", let coordinator = primary as? any CacheFillCoordinator else { return }
        await coordinator.releaseFill(lease)
    }

    public func waitForFill(_ key: CacheKey, timeout: Duration) async {
        guard !failover.isDegraded, let coordinator = primary as? any CacheFillCoordinator else { return }
        await coordinator.waitForFill(key, timeout: timeout)
    }
}
