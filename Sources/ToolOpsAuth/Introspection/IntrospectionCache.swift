import Synchronization
import ToolOpsCore

/// Where introspection verdicts are kept, keyed by the SHA-256 of the token (hex): in this
/// process (``MemoryIntrospectionCache``) or shared by the replicas (`RedisIntrospectionCache`
/// in ToolOpsRedisBackend), so a token introspected through one replica is known to all.
///
/// A cache that fails is passed by (the endpoint is asked); it never decides on its own.
public protocol IntrospectionCache: Sendable {
    /// The verdict kept for `tokenHash`, if any.
    func verdict(for tokenHash: String) async throws -> IntrospectionVerdict?
    /// Keeps `verdict` for `duration`.
    func store(_ verdict: IntrospectionVerdict, for tokenHash: String, keepFor duration: Duration) async throws
}

/// Verdicts in this process, at most ``maximumEntries`` (expired ones are dropped first; when
/// all are live, the cache starts over: each entry costs one introspection to regain).
public final class MemoryIntrospectionCache: IntrospectionCache {
    struct Entry {
        var verdict: IntrospectionVerdict
        var until: ContinuousClock.Instant
    }

    public let maximumEntries: Int
    private let entries = Mutex<[String: Entry]>([:])

    public init(maximumEntries: Int = 10_000) {
        self.maximumEntries = max(1, maximumEntries)
    }

    public func verdict(for tokenHash: String) async throws -> IntrospectionVerdict? {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let entry = entries[tokenHash] else { return nil }
            guard now < entry.until else {
                entries.removeValue(forKey: tokenHash)
                return nil
            }
            return entry.verdict
        }
    }

    public func store(_ verdict: IntrospectionVerdict, for tokenHash: String, keepFor duration: Duration) async throws {
        let now = ContinuousClock.now
        entries.withLock { entries in
            if entries.count >= maximumEntries, entries[tokenHash] == nil {
                entries = entries.filter { now < $0.value.until }
                if entries.count >= maximumEntries { entries.removeAll(keepingCapacity: true) }
            }
            entries[tokenHash] = Entry(verdict: verdict, until: now + duration)
        }
    }

    /// Verdicts held now (expired ones included until they are next looked at).
    public var count: Int { entries.withLock { $0.count } }
}
