import Synchronization
import ToolOpsCore

/// A JWKS document as one replica fetched it, shared with the others.
public struct JWKSDocument: Sendable, Hashable {
    /// The document's bytes, as the endpoint served them.
    public var bytes: [UInt8]
    /// When it was fetched (wall clock, so replicas can compare).
    public var fetchedAt: ClockInstant

    public init(bytes: [UInt8], fetchedAt: ClockInstant) {
        self.bytes = bytes
        self.fetchedAt = fetchedAt
    }
}

/// Where the replicas of a cluster share what they fetched from a JWKS endpoint and the right to
/// fetch it, so that the endpoint sees one request per interval from the whole cluster rather
/// than one per replica, and a key rotation seen by one replica reaches the others without
/// further requests.
///
/// ``JWKSKeySource`` asks ``latest(url:)`` before fetching; fetches only after winning
/// ``claimFetch(url:for:)`` (a replica that loses waits for the winner's ``publish(_:url:keepFor:)``);
/// a store that fails is bypassed (the source fetches on its own, within its local budget).
/// ``MemoryJWKSDocumentStore`` shares within one process; `RedisJWKSDocumentStore` (in
/// ToolOpsRedisBackend) across replicas.
public protocol JWKSDocumentStore: Sendable {
    /// The newest document any replica published for `url`, if one is kept.
    func latest(url: String) async throws -> JWKSDocument?
    /// Takes the right to fetch `url` for `interval`: `true` for exactly one caller per interval.
    func claimFetch(url: String, for interval: Duration) async throws -> Bool
    /// Shares a fetched document for `duration` (the source's maximum staleness).
    func publish(_ document: JWKSDocument, url: String, keepFor duration: Duration) async throws
}

/// A ``JWKSDocumentStore`` for the sources of one process.
public final class MemoryJWKSDocumentStore: JWKSDocumentStore {
    struct Entry {
        var document: JWKSDocument?
        var keptUntil: ContinuousClock.Instant = .now
        var claimedUntil: ContinuousClock.Instant?
    }

    private let entries = Mutex<[String: Entry]>([:])

    public init() {}

    public func latest(url: String) async throws -> JWKSDocument? {
        entries.withLock { entries in
            guard let entry = entries[url], ContinuousClock.now < entry.keptUntil else { return nil }
            return entry.document
        }
    }

    public func claimFetch(url: String, for interval: Duration) async throws -> Bool {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            var entry = entries[url] ?? Entry()
            if let until = entry.claimedUntil, now < until { return false }
            entry.claimedUntil = now + interval
            entries[url] = entry
            return true
        }
    }

    public func publish(_ document: JWKSDocument, url: String, keepFor duration: Duration) async throws {
        entries.withLock { entries in
            var entry = entries[url] ?? Entry()
            if let kept = entry.document, kept.fetchedAt > document.fetchedAt, ContinuousClock.now < entry.keptUntil { return }
            entry.document = document
            entry.keptUntil = .now + duration
            entries[url] = entry
        }
    }
}
