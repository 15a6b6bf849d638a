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

/// Every Redis store against a real local Redis Cluster of three masters, each replica with a
/// client of its own (`redis-cluster://` seeds): the guarantees of one Redis hold when the keys
/// are spread over masters.
@Suite("Every store on a 3-master Redis Cluster", .serialized, .timeLimit(.minutes(2)))
struct ClusterStoresTests {
    func clients(_ cluster: RedisClusterServers, _ count: Int = 2) throws -> [RedisClient] {
        try (0..<count).map { _ in try RedisClient(url: cluster.url, logger: quietLogger) }
    }

    /// How many keys each master holds (more than one master must be in use for the test to mean anything).
    func keysPerMaster(_ cluster: RedisClusterServers) async throws -> [Int] {
        var counts: [Int] = []
        for port in try cluster.masterPorts() {
            let direct = try RedisClient(url: "redis://127.0.0.1:\(port)", logger: quietLogger)
            defer { direct.shutdown() }
            counts.append(Int(try await direct.send("DBSIZE").int ?? 0))
        }
        return counts
    }

    @Test func rateLimitsHoldForTheClusterAcrossSlotsAndReplicas() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let clients = try clients(cluster)
            defer { clients.forEach { $0.shutdown() } }
            let stores = clients.map { RedisRateLimitStore(client: $0, leasing: .off) }
            #expect(stores.allSatisfy { $0.slotMode == .perSlot }, "chosen from the client's topology")
            // Tool and tenant buckets in different slots (and on different masters): all or nothing.
            let tool = RateLimitRequest(key: "tool:search", limit: try RateLimit(rate: 1, per: .seconds(100), burst: 3))
            let tenant = RateLimitRequest(key: "tenant:acme", limit: try RateLimit(rate: 1, per: .seconds(100), burst: 2))
            var allowed = 0
            for index in 0..<6 {
                let decisions = try await stores[index % 2].acquire([tool, tenant], maxWait: .zero)
                #expect(decisions.count == 2 && decisions[0].allowed == decisions[1].allowed)
                if decisions[0].allowed { allowed += 1 }
            }
            #expect(allowed == 2, "the tenant's burst of 2 bounds the calls, across both replicas")
            // The refused calls took nothing from the tool bucket: one more tool-only call fits.
            #expect(try await stores[1].acquire([tool], maxWait: .zero)[0].allowed)
            #expect(try await stores[0].acquire([tool], maxWait: .zero)[0].allowed == false)

            // Many keys, leased, on both replicas: each key's limit holds.
            let leased = clients.map { RedisRateLimitStore(client: $0) }
            let limit = try RateLimit(rate: 1, per: .seconds(100), burst: 5)
            for key in 0..<20 {
                var admitted = 0
                for attempt in 0..<8 where try await leased[attempt % 2].acquire([RateLimitRequest(key: "k\(key)", limit: limit)], maxWait: .zero)[0].allowed {
                    admitted += 1
                }
                #expect(admitted == 5, "key k\(key)")
            }
            #expect(try await keysPerMaster(cluster).filter { $0 > 0 }.count == 3)
        }
    }

    @Test func breakerBulkheadAndMembershipAreSharedByTheReplicas() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let clients = try clients(cluster)
            defer { clients.forEach { $0.shutdown() } }
            let breakers = clients.enumerated().map {
                RedisCircuitBreakerStore(client: $1, configuration: .init(flushInterval: .milliseconds(5), replicaID: "r\($0)"))
            }
            for breaker in breakers { try await breaker.start() }
            let policy = try CircuitBreakerPolicy(window: .time(.seconds(10)), failureRateThreshold: 0.5, minimumCalls: 4, openDuration: .seconds(5))
            for name in ["svc-a", "svc-b", "svc-c"] {
                for _ in 0..<4 { _ = try await breakers[0].record(key: name, outcome: .failure(duration: .milliseconds(1)), probe: false, policy: policy) }
            }
            await breakers[0].flush()
            // Replica 1 learns it from the channel (published on one node, subscribed on another).
            for name in ["svc-a", "svc-b", "svc-c"] {
                #expect(await eventually { (try? await breakers[1].admit(key: name, policy: policy).allowed) == false }, "\(name)")
            }

            let bulkheads = clients.map { RedisBulkheadStore(client: $0) }
            var permits: [BulkheadPermit] = []
            for index in 0..<3 { permits.append(try await bulkheads[index % 2].acquire(key: "db", limit: 3, lease: .seconds(30), maxWait: .zero)) }
            await #expect(throws: ToolOpsError.self) { _ = try await bulkheads[1].acquire(key: "db", limit: 3, lease: .seconds(30), maxWait: .zero) }
            await bulkheads[0].release(permits[0])
            #expect(await eventually { (try? await bulkheads[1].acquire(key: "db", limit: 3, lease: .seconds(30), maxWait: .milliseconds(100))) != nil })

            let memberships = clients.map { RedisMembershipStore(client: $0) }
            for (index, membership) in memberships.enumerated() {
                try await membership.register(try ReplicaInfo(id: "r\(index)", host: "127.0.0.1", port: 8080 + index, version: "1"), ttl: .seconds(10))
            }
            #expect(try await memberships[0].members().map(\.id).sorted() == ["r0", "r1"])
            try await memberships[1].deregister(id: "r1")
            #expect(try await memberships[0].members().map(\.id) == ["r0"])
        }
    }

    /// Entries and their tag and tool sets are in different slots: a write indexes, writes and
    /// indexes again; an invalidation takes members out and deletes their entries on their nodes.
    @Test func theCacheWithNearCachesAndInvalidationWorksAcrossSlots() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let clients = try clients(cluster, 3)
            defer { clients.forEach { $0.shutdown() } }
            let stores = try clients.map { try RedisCacheStore(client: $0) }
            for store in stores { try await store.start() }
            let tool = try ToolID("search:web")
            let now = WallClock().now
            func entry(_ index: Int, tags: Set<String>) -> CacheEntry {
                CacheEntry(result: ToolResult(["n": .integer(Int64(index))]), tool: tool, tags: tags, storedAt: now, freshUntil: now + .seconds(60))
            }
            let keys = try (0..<60).map { try CacheKey("search:web:\($0)") }
            for (index, key) in keys.enumerated() {
                try await stores[index % 3].set(key, entry(index, tags: index % 2 == 0 ? ["even", "all"] : ["all"]), encodedValue: nil)
            }
            #expect(try await keysPerMaster(cluster).filter { $0 > 0 }.count == 3, "entries spread over the masters")
            for (index, key) in keys.enumerated() { #expect(try await stores[(index + 1) % 3].get(key) == entry(index, tags: index % 2 == 0 ? ["even", "all"] : ["all"])) }
            // Into every near cache.
            for store in stores { for key in keys { _ = try await store.get(key) } }
            for store in stores { #expect(store.isNearCacheActive) }

            #expect(try await stores[0].invalidate(tag: "even") == 30)
            for store in stores {
                #expect(await eventually { (try? await store.get(keys[0])) == nil }, "the near caches dropped the tag")
                #expect(try await store.get(keys[1]) != nil)
            }
            #expect(try await stores[1].invalidate(tool: tool) == 30, "the tool's set still indexes the odd ones")
            for store in stores { #expect(await eventually { (try? await store.get(keys[1])) == nil }) }
            // No entry is left anywhere; only the "all" tag's set (its members expire with the entries' TTL).
            #expect(try await keysPerMaster(cluster).reduce(0, +) == 1)

            // A full set refuses the write without leaving the entry behind.
            let small = try RedisCacheStore(client: clients[0], configuration: .init(nearCache: nil, maximumSetMembers: 2))
            try await small.set(keys[0], entry(0, tags: ["t"]), encodedValue: nil)
            try await small.set(keys[1], entry(1, tags: ["t"]), encodedValue: nil)
            await #expect(throws: ToolOpsError.self) { try await small.set(keys[2], entry(2, tags: ["t"]), encodedValue: nil) }
            #expect(try await small.get(keys[2]) == nil)

            // removeAll reaches every master.
            for (index, key) in keys.prefix(20).enumerated() { try await stores[0].set(key, entry(index, tags: []), encodedValue: nil) }
            try await stores[2].removeAll()
            #expect(try await keysPerMaster(cluster).reduce(0, +) == 0)
        }
    }

    /// A write racing an invalidation never leaves an entry that later invalidations cannot find.
    @Test func anEntryThatSurvivesAnInvalidationIsStillIndexed() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let clients = try clients(cluster, 2)
            defer { clients.forEach { $0.shutdown() } }
            let writer = try RedisCacheStore(client: clients[0], configuration: .init(nearCache: nil))
            let invalidator = try RedisCacheStore(client: clients[1], configuration: .init(nearCache: nil, invalidationBatch: 3))
            let tool = try ToolID("search:web")
            let keys = try (0..<40).map { try CacheKey("search:web:race:\($0)") }
            for round in 0..<5 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for key in keys {
                            let now = WallClock().now
                            try await writer.set(key, CacheEntry(result: ToolResult(.integer(Int64(round))), tool: tool, tags: ["hot"], storedAt: now, freshUntil: now + .seconds(60)), encodedValue: nil)
                        }
                    }
                    group.addTask { for _ in 0..<10 { _ = try await invalidator.invalidate(tag: "hot") } }
                    try await group.waitForAll()
                }
                // Whatever survived the race is found by the next invalidation.
                _ = try await invalidator.invalidate(tag: "hot")
                for key in keys { #expect(try await writer.get(key) == nil, "round \(round): \(key) escaped its tag") }
            }
        }
    }

    @Test func authStoresWorkAcrossSlots() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let clients = try clients(cluster)
            defer { clients.forEach { $0.shutdown() } }
            // API keys: a record and its id index are in different slots; revocation is broadcast.
            let keyStores = clients.map { RedisAPIKeyStore(client: $0) }
            let secret = "tk_live_cluster_cluster_cluster_0001"
            let record = APIKeyRecord(id: "key-1", digest: APIKeyHasher.sha256.digest(secret), principal: "svc")
            try await keyStores[0].put(record)
            #expect(try await keyStores[1].record(lookupID: record.lookupID) == record)
            #expect(try await keyStores[1].revoke(id: "key-1"))
            #expect(try await keyStores[0].record(lookupID: record.lookupID) == nil)

            let documents = clients.map { RedisJWKSDocumentStore(client: $0) }
            #expect(try await documents[0].claimFetch(url: "https://idp/jwks", for: .seconds(10)))
            #expect(try await documents[1].claimFetch(url: "https://idp/jwks", for: .seconds(10)) == false, "one fetcher for the cluster")
            let document = JWKSDocument(bytes: Array(#"{"keys":[]}"#.utf8), fetchedAt: WallClock().now)
            try await documents[0].publish(document, url: "https://idp/jwks", keepFor: .seconds(60))
            #expect(try await documents[1].latest(url: "https://idp/jwks")?.bytes == document.bytes)

            let verdicts = clients.map { RedisIntrospectionCache(client: $0) }
            try await verdicts[0].store(.refused(.inactive), for: "abc123", keepFor: .seconds(60))
            #expect(try await verdicts[1].verdict(for: "abc123") == .refused(.inactive))

            let audit = clients.map { RedisAuditSink(client: $0, maximumLength: 100) }
            for (index, sink) in audit.enumerated() {
                sink.record(AuditEntry(allowed: index == 0, principal: "svc", tenant: nil, method: nil, tool: try ToolID("web:search"), action: "read", reason: "test", callID: "c\(index)", at: WallClock().now))
            }
            #expect(await eventually { ((try? await audit[1].last(10)) ?? []).count == 2 })
        }
    }
}
