import Crypto
import ToolOpsAuth
import ToolOpsCore
import ToolOpsRedis

/// The cluster's JWKS documents and the right to fetch them, in Redis: one replica fetches an
/// endpoint per interval (`SET NX PX` on `<prefix>:jwks:{<url hash>}:fetch`), publishes the
/// document (`<prefix>:jwks:{<url hash>}`, a hash of `at` and `doc`), and the others read it —
/// so a key rotation costs the endpoint one request, however many replicas see the new `kid`.
///
/// Documents read back are checked like fetched ones (size, key set) by ``JWKSKeySource``.
public struct RedisJWKSDocumentStore: JWKSDocumentStore {
    let client: RedisClient
    let keys: RedisKeySchema

    public init(client: RedisClient, keys: RedisKeySchema = .init()) {
        self.client = client
        self.keys = keys
    }

    /// The key name part of an endpoint: the SHA-256 of its URL (URLs may hold anything).
    static func name(_ url: String) -> String {
        APIKeyRecord.hex(Array(SHA256.hash(data: Array(url.utf8)).prefix(16)))
    }

    public func latest(url: String) async throws -> JWKSDocument? {
        let reply = try await client.send("HMGET", keys.jwksDocument(Self.name(url)), "at", "doc")
        guard case .array(let fields) = reply, fields.count == 2 else { return nil }
        guard case .bulkString(let bytes) = fields[1], let at = fields[0].int else { return nil }
        return JWKSDocument(bytes: bytes, fetchedAt: ClockInstant(nanoseconds: at &* 1_000_000))
    }

    public func claimFetch(url: String, for interval: Duration) async throws -> Bool {
        let milliseconds = max(1, interval.nanosecondsClamped / 1_000_000)
        let reply = try await client.send("SET", keys.jwksFetch(Self.name(url)), "1", "NX", "PX", milliseconds)
        return !reply.isNull
    }

    public func publish(_ document: JWKSDocument, url: String, keepFor duration: Duration) async throws {
        let key = keys.jwksDocument(Self.name(url))
        let milliseconds = max(1, duration.nanosecondsClamped / 1_000_000)
        let results = try await client.pipeline([
            RedisCommand("HSET", key, "at", document.fetchedAt.nanoseconds / 1_000_000, "doc", document.bytes),
            RedisCommand("PEXPIRE", key, milliseconds),
        ])
        for result in results { _ = try result.get() }
    }
}

/// Introspection verdicts shared by the replicas: `<prefix>:introspect:{<token SHA-256>}`
/// holds the verdict's canonical JSON for as long as it may be used (`PX`), so a token
/// introspected through one replica costs the others one `GET`. Never the token.
public struct RedisIntrospectionCache: IntrospectionCache {
    let client: RedisClient
    let keys: RedisKeySchema

    public init(client: RedisClient, keys: RedisKeySchema = .init()) {
        self.client = client
        self.keys = keys
    }

    public func verdict(for tokenHash: String) async throws -> IntrospectionVerdict? {
        guard case .bulkString(let bytes) = try await client.send("GET", keys.introspection(tokenHash)) else { return nil }
        return try IntrospectionVerdict(canonicalJSON: bytes)
    }

    public func store(_ verdict: IntrospectionVerdict, for tokenHash: String, keepFor duration: Duration) async throws {
        let milliseconds = duration.nanosecondsClamped / 1_000_000
        guard milliseconds > 0 else { return }
        _ = try await client.send("SET", keys.introspection(tokenHash), try verdict.canonicalJSON(), "PX", milliseconds)
    }
}
