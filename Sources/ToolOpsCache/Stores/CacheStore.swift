import ToolOpsCore

/// Where cached results live. One round trip per operation for a remote store.
///
/// Stores return entries until their ``CacheEntry/expiresAt`` (the middleware decides
/// between fresh and stale) and may drop them earlier (eviction). Errors mean the store
/// could not be used — the middleware then runs the tool uncached; they never reach callers.
public protocol CacheStore: Sendable {
    /// The entry for `key`, or `nil` on a miss (absent, expired, unreadable).
    func get(_ key: CacheKey) async throws -> CacheEntry?
    /// Stores `entry` until its ``CacheEntry/expiresAt``. `encodedValue` is the canonical
    /// JSON of the result's value when the caller already has it (stores that serialize
    /// reuse it).
    func set(_ key: CacheKey, _ entry: CacheEntry, encodedValue: [UInt8]?) async throws
    /// Removes the entry (idempotent).
    func delete(_ key: CacheKey) async throws
    /// Removes every entry carrying `tag`; returns how many were removed.
    @discardableResult func invalidate(tag: String) async throws -> Int
    /// Removes every entry of `tool`; returns how many were removed.
    @discardableResult func invalidate(tool: ToolID) async throws -> Int
    /// Removes every entry (an administrative operation, not for the hot path).
    func removeAll() async throws
}

extension CacheStore {
    public func set(_ key: CacheKey, _ entry: CacheEntry) async throws { try await set(key, entry, encodedValue: nil) }
}

/// A won right to fill one key cluster-wide (see ``CacheFillCoordinator``).
public struct CacheFillLease: Sendable, Hashable {
    public var key: CacheKey
    public var token: String
    public init(key: CacheKey, token: String) {
        self.key = key
        self.token = token
    }
}

/// Stampede protection across processes: a store that can elect one filler per key.
/// The cache middleware uses it when its store conforms (the Redis store does); in one
/// process, single-flight alone is enough.
public protocol CacheFillCoordinator: Sendable {
    /// Tries to become the one filler of `key` for at most `lease`. `nil`: someone else is.
    func acquireFill(_ key: CacheKey, lease: Duration) async throws -> CacheFillLease?
    /// Gives the lease back (after the entry was stored, or the fill failed).
    func releaseFill(_ lease: CacheFillLease) async
    /// Waits until `key` was filled or its filler gave up or vanished, at most `timeout`.
    func waitForFill(_ key: CacheKey, timeout: Duration) async
}
