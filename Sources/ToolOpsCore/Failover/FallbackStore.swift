
/// What every fallback store offers: its state and background probes.
public protocol FallbackStore: Sendable {
    /// The store's name in metrics, events and health details (e.g. `rate-limit`).
    var name: String { get }
    /// `true` while calls are decided by the degraded mode (health reports `degraded`).
    var isDegraded: Bool { get }
    /// Runs background probes until cancelled: while degraded, `check` (e.g. a Redis `PING`)
    /// is tried every probe interval and a success switches back to the shared store.
    /// Run it in a task group or as part of a ServiceLifecycle service.
    func runProbes(check: @escaping @Sendable () async throws -> Void) async
    /// The declared degraded mode.
    var mode: DegradedMode { get }
    /// The longest wait for the shared store per call.
    var deadline: Duration { get }
}

/// A fallback store whose state is a ``StoreFailover``: the ``FallbackStore`` members come
/// from it, written once here instead of in every wrapper.
package protocol FailoverFallbackStore: FallbackStore {
    var failover: StoreFailover { get }
}

extension FailoverFallbackStore {
    public var name: String { failover.name }
    public var isDegraded: Bool { failover.isDegraded }
    public var mode: DegradedMode { failover.mode }
    public var deadline: Duration { failover.deadline }
    public func runProbes(check: @escaping @Sendable () async throws -> Void) async { await failover.runProbes(check: check) }
}
