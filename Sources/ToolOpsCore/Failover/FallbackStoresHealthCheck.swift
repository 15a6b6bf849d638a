/// `degraded` while any of the given fallback stores runs on its degraded mode (Redis
/// unreachable, limits local, cache local or off).
public struct FallbackStoresHealthCheck: HealthCheck {
    private let provider: @Sendable () -> [any FallbackStore]

    /// The stores now (a provider may add stores made after the check).
    public var stores: [any FallbackStore] { provider() }

    public init(_ stores: [any FallbackStore]) { self.provider = { stores } }

    /// Checks whatever `stores` returns at each check, e.g. every fallback store a Redis
    /// backend has made so far.
    public init(stores: @escaping @Sendable () -> [any FallbackStore]) { self.provider = stores }

    /// The degraded stores as health details (`name: mode`), empty when none is degraded.
    public var degradedStores: [String: JSONValue] { Self.degraded(stores) }

    package static func degraded(_ stores: [any FallbackStore]) -> [String: JSONValue] {
        var details: [String: JSONValue] = [:]
        for store in stores where store.isDegraded { details[store.name] = .string(store.mode.description) }
        return details
    }

    public func check() async throws -> HealthCheckResult {
        let stores = self.stores
        let degraded = Self.degraded(stores)
        if degraded.isEmpty { return .healthy("\(stores.count) store(s) on the shared store") }
        return .degraded("on fallback: \(degraded.keys.sorted().joined(separator: ", "))", details: degraded)
    }
}
