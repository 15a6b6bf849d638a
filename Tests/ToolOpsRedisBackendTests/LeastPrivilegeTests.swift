import Foundation
import Testing
import ToolOpsAuth
import ToolOpsCache
import ToolOpsCore
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

/// Every store through a Redis ACL user holding only `RedisKeySchema.aclRules` (the least
/// privileges `Docs/operations.md` documents): if a store sent a command — or a script called
/// one — outside the list, or touched a key outside its prefix, Redis would answer `NOPERM`.
@Suite("Least privileges", .timeLimit(.minutes(1)))
struct LeastPrivilegeTests {
    @Test func everyStoreWorksWithOnlyTheDocumentedACLRules() async throws {
        let keys = RedisKeySchema(prefix: "app1")
        let options = RedisServer.Options(extraArguments: ["--user", "toolops", "on", ">pw-0123456789"] + keys.aclRules)
        try await withRedisServer(options) { server in
            let url = "redis://toolops:pw-0123456789@127.0.0.1:\(server.port)"
            let client = try RedisClient(url: url, logger: quietLogger)
            defer { client.shutdown() }
            // The ACL is in force: other keys and commands are refused.
            await #expect(throws: RedisClientError.self) { try await client.send("SET", "other:key", "1") }
            await #expect(throws: RedisClientError.self) { try await client.send("FLUSHALL") }

            let limits = RedisRateLimitStore(client: client, keys: keys)
            let limit = try RateLimit(rate: 1_000, per: .seconds(1), burst: 100)
            for _ in 0..<50 { _ = try await limits.acquire([RateLimitRequest(key: "a", limit: limit), RateLimitRequest(key: "b", limit: limit)], maxWait: .zero) }

            let breakers = RedisCircuitBreakerStore(client: client, keys: keys, configuration: .init(flushInterval: .milliseconds(5), replicaID: "r1"))
            try await breakers.start()
            let policy = try CircuitBreakerPolicy(window: .time(.seconds(10)), failureRateThreshold: 0.5, minimumCalls: 2, openDuration: .milliseconds(50))
            for _ in 0..<3 { _ = try await breakers.record(key: "svc", outcome: .failure(duration: .milliseconds(1)), probe: false, policy: policy) }
            await breakers.flush()
            #expect(await eventually { (try? await breakers.snapshot(key: "svc", policy: policy).state) == .open })
            try await Task.sleep(for: .milliseconds(60))
            let probe = try await breakers.admit(key: "svc", policy: policy)
            #expect(probe.allowed, "half-open: a probe")

            let bulkheads = RedisBulkheadStore(client: client, keys: keys)
            let permit = try await bulkheads.acquire(key: "db", limit: 1, lease: .seconds(10), maxWait: .milliseconds(10))
            await bulkheads.release(permit)

            let cache = try RedisCacheStore(client: client, configuration: .init(keys: keys))
            try await cache.start()
            let now = WallClock().now
            let key = try CacheKey("svc:k")
            try await cache.set(key, CacheEntry(result: ToolResult(.integer(1)), tool: try ToolID("svc:tool"), tags: ["t"], storedAt: now, freshUntil: now + .seconds(60)), encodedValue: nil)
            #expect(try await cache.get(key) != nil)
            if let lease = try await cache.acquireFill(try CacheKey("svc:fill"), lease: .seconds(1)) { await cache.releaseFill(lease) }
            #expect(try await cache.invalidate(tag: "t") == 1)
            try await cache.removeAll()

            let membership = RedisMembershipStore(client: client, keys: keys)
            try await membership.register(try ReplicaInfo(id: "r1", host: "127.0.0.1", port: 1, version: "1"), ttl: .seconds(5))
            #expect(try await membership.members().count == 1)
            try await membership.deregister(id: "r1")

            let apiKeys = RedisAPIKeyStore(client: client, keys: keys)
            let record = APIKeyRecord(id: "k1", digest: APIKeyHasher.sha256.digest("tk_live_least_privilege_000000000001"), principal: "svc")
            try await apiKeys.put(record)
            #expect(try await apiKeys.record(lookupID: record.lookupID) == record)
            #expect(try await apiKeys.revoke(id: "k1"))
            let documents = RedisJWKSDocumentStore(client: client, keys: keys)
            _ = try await documents.claimFetch(url: "https://idp/jwks", for: .seconds(1))
            try await documents.publish(JWKSDocument(bytes: Array("{}".utf8), fetchedAt: now), url: "https://idp/jwks", keepFor: .seconds(10))
            _ = try await documents.latest(url: "https://idp/jwks")
            let verdicts = RedisIntrospectionCache(client: client, keys: keys)
            try await verdicts.store(.refused(.inactive), for: "h", keepFor: .seconds(5))
            _ = try await verdicts.verdict(for: "h")
            let audit = RedisAuditSink(client: client, keys: keys, maximumLength: 10)
            audit.record(AuditEntry(allowed: true, principal: "svc", tenant: nil, method: nil, tool: try ToolID("svc:tool"), action: "read", reason: "ok", callID: "c", at: now))
            #expect(await eventually { ((try? await audit.last(5)) ?? []).count == 1 })
            try await client.send("TIME")
            _ = try await client.send("PING")
        }
    }
}
