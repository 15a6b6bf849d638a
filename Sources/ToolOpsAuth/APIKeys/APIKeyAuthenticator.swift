import Synchronization
import ToolOpsCore

/// Authenticates the `X-API-Key` header (configurable) against an ``APIKeyStore``.
///
/// The key is hashed (``APIKeyHasher``), its record fetched by lookup id and its digest
/// compared in constant time. A verified key is cached in this process for ``Configuration/cacheTTL``
/// (0 round trips after the first call); a change or revocation seen by the store's
/// notifications drops the cached verdict at once, and the TTL bounds how long a verdict
/// can outlive a revocation this process was not told of. Only verified keys are cached.
///
/// Failures: no header → `nil` (not this authenticator's); a key over
/// ``Configuration/maximumKeyLength`` → `malformed`; unknown or wrong → `invalidCredentials`;
/// past its expiry → `expired`; the store cannot be asked → `providerUnavailable` (a cached
/// key keeps working meanwhile).
public final class APIKeyAuthenticator: Authenticator {
    public struct Configuration: Sendable {
        /// The header carrying the key. Defaults to `X-API-Key` (matched case-insensitively).
        public var header: String
        /// How long a verified key is trusted without asking the store again. Defaults to 60 s.
        public var cacheTTL: Duration
        /// Verified keys cached at most. Defaults to 10,000.
        public var maximumCachedKeys: Int
        /// Longer keys are refused unread. Defaults to 512 bytes.
        public var maximumKeyLength: Int

        public init(header: String = "X-API-Key", cacheTTL: Duration = .seconds(60), maximumCachedKeys: Int = 10_000, maximumKeyLength: Int = 512) {
            self.header = header
            self.cacheTTL = cacheTTL
            self.maximumCachedKeys = maximumCachedKeys
            self.maximumKeyLength = maximumKeyLength
        }
    }

    struct Cached {
        var digest: DigestWords
        var lookupID: String
        var identity: Identity
        var expiresAt: ClockInstant?
        var trustedUntil: ClockInstant
    }

    public let configuration: Configuration
    let store: any APIKeyStore
    let hasher: APIKeyHasher
    let clock: any ToolOpsClock
    /// The header's name as credentials store it.
    let headerKey: String
    /// Verified keys by their full digest (four words: no hex text, no allocation on the hot path).
    private let cache = Mutex<[DigestWords: Cached]>([:])

    /// - Parameter clock: a wall clock (key expiries are wall-clock instants). Defaults to ``WallClock``.
    public init(store: any APIKeyStore, hasher: APIKeyHasher = .sha256, configuration: Configuration = .init(), clock: any ToolOpsClock = WallClock()) {
        self.store = store
        self.hasher = hasher
        self.configuration = configuration
        self.clock = clock
        self.headerKey = configuration.header.lowercased()
        if let source = store as? any APIKeyChangeSource {
            source.onChange { [weak self] lookupID in
                if let lookupID { self?.invalidate(lookupID: lookupID) } else { self?.invalidateAll() }
            }
        }
    }

    public func authenticate(_ credentials: AuthCredentials) async throws(AuthError) -> Identity? {
        guard let raw = credentials.headers[headerKey] else { return nil }
        guard raw.utf8.count <= configuration.maximumKeyLength else {
            throw AuthError(.malformed, "API key longer than \(configuration.maximumKeyLength) bytes")
        }
        let padded = raw.first == " " || raw.first == "\t" || raw.last == " " || raw.last == "\t"
        let key = padded ? Substring(raw).trimmingCharacters(in: " \t") : raw
        if key.isEmpty { return nil }
        let words = hasher.digestWords(key)
        let now = clock.now
        if let cached = cache.withLock({ $0[words] }), now < cached.trustedUntil, cached.digest.constantTimeEquals(words) {
            if let expiry = cached.expiresAt, now >= expiry { throw AuthError(.expired, "API key expired") }
            return cached.identity
        }
        let digest = words.bytes
        let lookupID = APIKeyHasher.lookupID(digest)
        let record: APIKeyRecord?
        do {
            record = try await store.record(lookupID: lookupID)
        } catch {
            throw AuthError(.providerUnavailable, "the API-key store could not be asked: \(error)")
        }
        guard let record, APIKeyHasher.constantTimeEquals(record.digest, digest) else {
            throw AuthError(.invalidCredentials, "unknown API key")
        }
        if let expiry = record.expiresAt, now >= expiry { throw AuthError(.expired, "API key \(record.id) expired") }
        var claims = record.metadata
        claims["key_id"] = record.id
        let identity = Identity(
            principal: record.principal, tenant: record.tenant, roles: record.roles, scopes: record.scopes, method: .apiKey, claims: claims,
            expiresAt: record.expiresAt)
        let entry = Cached(digest: words, lookupID: lookupID, identity: identity, expiresAt: record.expiresAt, trustedUntil: now + configuration.cacheTTL)
        let maximum = configuration.maximumCachedKeys
        cache.withLock { cache in
            if cache[words] == nil && cache.count >= maximum {
                // Full: drop the entries past their trust first, else any one (they are only a cache).
                let stale = cache.filter { now >= $0.value.trustedUntil }.map(\.key)
                for key in stale { cache[key] = nil }
                if cache.count >= maximum, let any = cache.keys.first { cache[any] = nil }
            }
            cache[words] = entry
        }
        return identity
    }

    /// Drops the cached verdict for one key (its record changed or was revoked).
    public func invalidate(lookupID: String) {
        cache.withLock { cache in
            for key in cache.keys where cache[key]?.lookupID == lookupID { cache[key] = nil }
        }
    }

    /// Drops every cached verdict (the invalidation channel was lost: anything may have been missed).
    public func invalidateAll() {
        cache.withLock { $0.removeAll() }
    }

    /// Keys cached now.
    public var cachedKeys: Int { cache.withLock { $0.count } }
}
