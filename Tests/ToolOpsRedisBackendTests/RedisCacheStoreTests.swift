import Synchronization
import Testing
import ToolOpsCache
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

/// A tool that counts its runs and answers slowly, like a real one.
final class SlowTool: ToolRunner {
    let runs = Atomic<Int>(0)
    let delay: Duration
    init(delay: Duration = .milliseconds(100)) { self.delay = delay }
    func run(_ call: ToolCall) async throws -> ToolResult {
        let run = runs.add(1, ordering: .relaxed).newValue
        try await Task.sleep(for: delay)
        return ToolResult(["arguments": call.arguments, "run": .integer(Int64(run))])
    }
    var count: Int { runs.load(ordering: .relaxed) }
}

final class LoadState: Sendable {
    let failures = Atomic<Int>(0)
    let running = Atomic<Bool>(true)
}

@Suite("Redis cache store", .timeLimit(.minutes(1)))
struct RedisCacheStoreTests {
    struct Replica {
        let client: RedisClient
        let store: RedisCacheStore
        let cache: CacheMiddleware
    }

    func replicas(_ url: String, count: Int = 3, policy: CachePolicy? = nil, configuration: RedisCacheStore.Configuration = .init()) async throws -> [Replica] {
        var result: [Replica] = []
        for _ in 0..<count {
            let client = try RedisClient(url: url, logger: quietLogger)
            let store = try RedisCacheStore(client: client, configuration: configuration)
            try await store.start()
            let cache = try CacheMiddleware(.init(policy: try policy ?? CachePolicy(jitter: 0)), store: store)
            result.append(Replica(client: client, store: store, cache: cache))
        }
        return result
    }

    func call(_ arguments: JSONValue = ["q": "swift"], tags: Set<String> = [], tenant: String? = nil) throws -> ToolCall {
        var call = ToolCall(tool: try ToolID("search:web"), arguments: arguments, tags: tags)
        call.context.toolTenant = tenant
        return call
    }

    /// Reads `key` through the store until one read is served from the near cache (no `GET`
    /// reaches Redis). A read that overlapped an invalidation message is not kept, so allow a few.
    func servedLocally(_ replica: Replica, _ key: CacheKey) async throws -> Bool {
        for _ in 0..<10 {
            let before = try await replica.client.commandCalls()["get"] ?? 0
            _ = try await replica.store.get(key)
            if try await replica.client.commandCalls()["get"] ?? 0 == before { return true }
        }
        return false
    }

    @Test func hundredConcurrentCallsOnThreeReplicasRunTheToolOnce() async throws {
        try await withRedisURL { url in
            let all = try await replicas(url)
            defer { all.forEach { $0.client.shutdown() } }
            let tool = SlowTool(delay: .milliseconds(200))
            let arguments: JSONValue = ["q": .string("stampede-\(UInt32.random(in: 0...UInt32.max))")]
            try await withThrowingTaskGroup(of: JSONValue.self) { group in
                for index in 0..<100 {
                    let replica = all[index % 3]
                    group.addTask { try await replica.cache.run(try call(arguments), next: tool).value }
                }
                var values: Set<JSONValue> = []
                for try await value in group { values.insert(value) }
                #expect(values.count == 1)
            }
            #expect(tool.count == 1)
        }
    }

    @Test func aDeadFillersLeaseExpiresAndOneWaiterTakesOver() async throws {
        try await withRedisURL { url in
            let all = try await replicas(url, count: 2, configuration: .init(pollInterval: .milliseconds(20)))
            defer { all.forEach { $0.client.shutdown() } }
            let call = try call(["q": .string("orphan-\(UInt32.random(in: 0...UInt32.max))")])
            let key = try CacheKeyer().key(for: call)
            // A filler that took the lease and died: never writes, never releases.
            #expect(try await all[0].store.acquireFill(key, lease: .milliseconds(300)) != nil)
            let tool = SlowTool(delay: .milliseconds(10))
            let started = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<10 { group.addTask { _ = try await all[index % 2].cache.run(call, next: tool) } }
                try await group.waitForAll()
            }
            let elapsed = ContinuousClock.now - started
            #expect(tool.count == 1)
            #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(5))
        }
    }

    @Test func aReleasedLeaseWakesTheWaiterAtOnceAndOnlyItsHolderCanRelease() async throws {
        try await withRedisURL { url in
            // A slow poll: a waiter that returns quickly was woken by the release's message.
            let all = try await replicas(url, count: 2, configuration: .init(pollInterval: .seconds(5)))
            defer { all.forEach { $0.client.shutdown() } }
            let key = try CacheKeyer().key(for: try call(["q": .string("release-\(UInt32.random(in: 0...UInt32.max))")]))
            let lease = try #require(try await all[0].store.acquireFill(key, lease: .seconds(30)))
            // Someone else's token releases nothing.
            await all[1].store.releaseFill(CacheFillLease(key: key, token: "not-the-holder"))
            #expect(try await all[1].store.acquireFill(key, lease: .seconds(30)) == nil)
            let started = ContinuousClock.now
            async let waited: Void = all[1].store.waitForFill(key, timeout: .seconds(10))
            try await Task.sleep(for: .milliseconds(50))
            // Returns without waiting for Redis's answer; the lease is gone all the same.
            await all[0].store.releaseFill(lease)
            await waited
            #expect(ContinuousClock.now - started < .seconds(3))
            #expect(try await all[1].store.acquireFill(key, lease: .seconds(30)) != nil)
        }
    }

    @Test func tagInvalidationReachesEveryReplicaAndNearCacheWithinTheBound() async throws {
        try await withRedisURL { url in
            let all = try await replicas(url)
            defer { all.forEach { $0.client.shutdown() } }
            let tool = SlowTool(delay: .milliseconds(1))
            let tag = "news-\(UInt32.random(in: 0...UInt32.max))"
            let call = try call(["q": .string(tag)], tags: [tag])
            let first = try await all[0].cache.run(call, next: tool)
            // B and C now hold it in their near caches.
            for replica in all[1...] {
                #expect(try await replica.cache.run(call, next: tool).metadata["cache"] == "hit")
                #expect(replica.store.isNearCacheActive)
                #expect(try await replica.cache.run(call, next: tool).value == first.value)
                #expect(try await servedLocally(replica, try CacheKeyer().key(for: call)))  // from L1
            }
            let invalidated = ContinuousClock.now
            #expect(try await all[0].cache.invalidate(tag: tag) == 1)
            // Every replica misses within 100 ms (their near caches dropped the entry).
            var missedEverywhere = false
            while !missedEverywhere && ContinuousClock.now - invalidated < .seconds(1) {
                var misses = 0
                for replica in all where try await replica.store.get(try CacheKeyer().key(for: call)) == nil { misses += 1 }
                missedEverywhere = misses == all.count
                if !missedEverywhere { try await Task.sleep(for: .milliseconds(1)) }
            }
            #expect(missedEverywhere)
            // Serially this takes a few ms (the documented bound is 100 ms); 1 s leaves room for
            // the whole suite running in parallel on 2 cores and still fails a lost message.
            #expect(ContinuousClock.now - invalidated < .seconds(1))
            // A rewrite on one replica replaces the value everywhere — near caches included: each
            // first holds the current value locally, then must drop it for the new one.
            let key = try CacheKeyer().key(for: call)
            _ = try await all[1].cache.run(call, next: tool)
            for replica in all { #expect(try await servedLocally(replica, key)) }
            let now = WallClock().now
            let rewritten = CacheEntry(
                result: ToolResult(["rewritten": true]), tool: call.tool, tags: [tag], storedAt: now, freshUntil: now + .seconds(60))
            try await all[1].store.set(key, rewritten, encodedValue: nil)
            for replica in all {
                var seen: CacheEntry?
                let deadline = ContinuousClock.now + .seconds(1)
                repeat {
                    seen = try await replica.store.get(key)
                    if seen != rewritten { try await Task.sleep(for: .milliseconds(1)) }
                } while seen != rewritten && ContinuousClock.now < deadline
                #expect(seen == rewritten)
            }
            #expect(try await all[2].cache.invalidate(tool: try ToolID("search:web")) >= 1)
            // The other replicas' near caches learn it through pub/sub: within the same bound.
            for replica in all {
                var gone = false
                let deadline = ContinuousClock.now + .seconds(1)
                repeat {
                    gone = try await replica.store.get(key) == nil
                    if !gone { try await Task.sleep(for: .milliseconds(1)) }
                } while !gone && ContinuousClock.now < deadline
                #expect(gone)
            }
        }
    }

    @Test func expiryTenantsAndBoundedTagSets() async throws {
        try await withRedisURL { url in
            let all = try await replicas(
                url, count: 1, policy: try CachePolicy(defaultTTL: .seconds(4), jitter: 0),
                configuration: .init(maximumSetMembers: 3))
            defer { all.forEach { $0.client.shutdown() } }
            let replica = all[0]
            let tool = SlowTool(delay: .milliseconds(1))
            let tag = "bounded-\(UInt32.random(in: 0...UInt32.max))"
            for index in 0..<4 { _ = try await replica.cache.run(try call(["n": .integer(Int64(index))], tags: [tag]), next: tool) }
            #expect(tool.count == 4)
            // The fourth entry did not fit its tag set: not cached, the call still succeeded.
            #expect(try await replica.cache.run(try call(["n": 3], tags: [tag]), next: tool).metadata["cache"] == nil)
            #expect(try await replica.cache.run(try call(["n": 0], tags: [tag]), next: tool).metadata["cache"] == "hit")
            // Redis expires entries (PX) — and so does the near cache. (4 s: the writes above
            // must all land within one TTL, even with the suite running in parallel.)
            try await Task.sleep(for: .milliseconds(4_100))
            #expect(try await replica.store.get(try CacheKeyer().key(for: try call(["n": 0], tags: [tag]))) == nil)
            // Expired members are pruned: the set takes new entries again.
            _ = try await replica.cache.run(try call(["n": 9], tags: [tag]), next: tool)
            #expect(try await replica.cache.run(try call(["n": 9], tags: [tag]), next: tool).metadata["cache"] == "hit")
        }
    }

    @Test func tenantsNeverShareAnEntry() async throws {
        try await withRedisURL { url in
            let all = try await replicas(url, count: 2)
            defer { all.forEach { $0.client.shutdown() } }
            let tool = SlowTool(delay: .milliseconds(1))
            // The keyer's default scope is the tenant: through Redis and the near caches too.
            let arguments: JSONValue = ["tenants": .string("t-\(UInt32.random(in: 0...UInt32.max))")]
            let forA = try await all[0].cache.run(try call(arguments, tenant: "a"), next: tool)
            let forB = try await all[0].cache.run(try call(arguments, tenant: "b"), next: tool)
            #expect(forB.metadata["cache"] == nil && forB.value != forA.value)
            for replica in all {
                #expect(try await replica.cache.run(try call(arguments, tenant: "a"), next: tool).value == forA.value)
                #expect(try await replica.cache.run(try call(arguments, tenant: "b"), next: tool).value == forB.value)
            }
            #expect(try await all[1].cache.run(try call(arguments), next: tool).metadata["cache"] == nil)  // no tenant: its own scope
            #expect(tool.count == 3)
        }
    }

    @Test func aLostChannelTurnsTheNearCacheOffUntilItIsBack() async throws {
        try await withRedisURL { url in
            let all = try await replicas(url, count: 1)
            defer { all.forEach { $0.client.shutdown() } }
            let replica = all[0]
            let tool = SlowTool(delay: .milliseconds(1))
            let call = try call(["q": .string("near-\(UInt32.random(in: 0...UInt32.max))")])
            _ = try await replica.cache.run(call, next: tool)
            #expect(replica.store.isNearCacheActive)
            let admin = try RedisClient(url: url, logger: quietLogger)
            defer { admin.shutdown() }
            #expect(replica.store.channelLosses == 0)
            _ = try await admin.send("CLIENT", "KILL", "TYPE", "pubsub")
            // The loss turned the near cache off (counted, not sampled: the gap may be shorter
            // than any polling interval), and it came back on once the channel was restored.
            #expect(await eventually { replica.store.channelLosses == 1 && replica.store.isNearCacheActive })
            // Hits keep working through Redis throughout.
            #expect(try await replica.cache.run(call, next: tool).metadata["cache"] == "hit")
            #expect(tool.count == 1)
        }
    }

    @Test func redisKilledAndRestartedDuringLoad() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let redis = try RedisCacheStore(client: client)
            try await redis.start()
            let store = try FallbackCacheStore(primary: redis, fallback: MemoryCacheStore(), deadline: .milliseconds(100), probeInterval: .milliseconds(100))
            let cache = try CacheMiddleware(.init(policy: try CachePolicy(jitter: 0)), store: store)
            let tool = SlowTool(delay: .milliseconds(1))
            let load = LoadState()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        var index = 0
                        while load.running.load(ordering: .relaxed) {
                            index += 1
                            do { _ = try await cache.run(try call(["w": .integer(Int64(worker)), "i": .integer(Int64(index % 20))]), next: tool) } catch {
                                load.failures.add(1, ordering: .relaxed)
                            }
                            try await Task.sleep(for: .milliseconds(2))
                        }
                    }
                }
                try await Task.sleep(for: .milliseconds(200))  // load runs against Redis for a while
                server.kill()
                #expect(await eventually { store.isDegraded })
                // An invalidation that cannot reach the cluster is reported, not swallowed.
                let error = await #expect(throws: ToolOpsError.self) { try await store.invalidate(tag: "anything") }
                #expect(error?.code == .storeUnavailable)
                try server.start()
                let deadline = ContinuousClock.now + .seconds(5)
                while store.isDegraded && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                #expect(!store.isDegraded)
                try await Task.sleep(for: .milliseconds(200))
                load.running.store(false, ordering: .relaxed)
                try await group.waitForAll()
            }
            #expect(load.failures.load(ordering: .relaxed) == 0)
            // Back on Redis: the restarted (empty) server holds entries again.
            let size = try await client.send("DBSIZE").int ?? 0
            #expect(size > 0)
        }
    }
}

@Suite("Redis cache store: damaged and bulk state", .timeLimit(.minutes(1)))
struct RedisCacheStoreStateTests {
    @Test func undecodableBytesAreAMissAndRemoveAllReachesEveryReplica() async throws {
        try await withRedisServer { server in
            let keys = RedisKeySchema(prefix: "damaged")
            let clients = try (0..<2).map { _ in try RedisClient(url: server.url, logger: quietLogger) }
            defer { clients.forEach { $0.shutdown() } }
            let stores = try clients.map { try RedisCacheStore(client: $0, configuration: .init(keys: keys)) }
            for store in stores { try await store.start() }
            defer { stores.forEach { $0.stop() } }
            let key = try CacheKey("search:web:damaged")
            // Bytes that are not an entry (another writer, a truncated restore): a miss, no error.
            try await clients[0].send("SET", keys.cacheEntry(key.value), [UInt8]([0x54, 0x4f, 0x43, 0x31, 0xff, 0x00]))
            #expect(try await stores[0].get(key) == nil)
            try await clients[0].send("SET", keys.cacheEntry(key.value), "plain text")
            #expect(try await stores[0].get(key) == nil)

            // removeAll: every entry of this prefix goes, other prefixes stay, near caches empty.
            let now = WallClock().now
            for index in 0..<50 {
                let entry = CacheEntry(
                    result: ToolResult(.integer(Int64(index))), tool: try ToolID("search:web"), tags: ["t"], storedAt: now,
                    freshUntil: now + .seconds(60))
                try await stores[0].set(try CacheKey("search:web:\(index)"), entry, encodedValue: nil)
            }
            _ = try await stores[1].get(try CacheKey("search:web:7"))  // into replica 1's near cache
            try await clients[0].send("SET", "other:cache:keep", "1")
            try await stores[0].removeAll()
            let left = try await clients[0].send("KEYS", "damaged:cache:*").array ?? []
            #expect(left.isEmpty, "\(left)")
            #expect(try await clients[0].send("GET", "other:cache:keep") == .bulkString(Array("1".utf8)))
            // A miss, answered (not an error).
            #expect(await eventually {
                do { return try await stores[1].get(try CacheKey("search:web:7")) == nil } catch { return false }
            })
        }
    }

    @Test func removeAllStaysInsideItsOwnPrefixEvenWithGlobCharacters() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let globby = try RedisCacheStore(client: client, configuration: .init(keys: RedisKeySchema(prefix: "a*"), nearCache: nil))
            let neighbour = RedisKeySchema(prefix: "ab")
            try await client.send("SET", neighbour.cacheEntry("search:web:x"), "other deployment")
            try await client.send("SET", RedisKeySchema(prefix: "a*").cacheEntry("search:web:x"), "mine")
            try await globby.removeAll()
            #expect(try await client.send("EXISTS", neighbour.cacheEntry("search:web:x")) == .integer(1))
            #expect(try await client.send("EXISTS", RedisKeySchema(prefix: "a*").cacheEntry("search:web:x")) == .integer(0))
        }
    }

    @Test func invalidationBatchesAreBoundedForLua() throws {
        let client = try RedisClient(url: "redis://127.0.0.1:1", logger: quietLogger)
        defer { client.shutdown() }
        let error = #expect(throws: ToolOpsError.self) { try RedisCacheStore(client: client, configuration: .init(invalidationBatch: 10_000)) }
        #expect(error?.code == .invalidConfiguration)
        #expect(throws: Never.self) {
            try RedisCacheStore(client: client, configuration: .init(invalidationBatch: RedisCacheStore.maximumInvalidationBatch))
        }
    }

    @Test func concurrentWritesNeverLeaveAnOlderValueInANearCache() async throws {
        try await withRedisServer { server in
            let clients = try (0..<2).map { _ in try RedisClient(url: server.url, logger: quietLogger) }
            defer { clients.forEach { $0.shutdown() } }
            let stores = try clients.map { try RedisCacheStore(client: $0) }
            for store in stores { try await store.start() }
            defer { stores.forEach { $0.stop() } }
            #expect(await eventually { stores.allSatisfy(\.isNearCacheActive) })
            let tool = try ToolID("search:web")
            var incoherent = 0
            for round in 0..<100 {
                let key = try CacheKey("search:web:race-\(round)")
                let now = WallClock().now
                // Both replicas write the key at once; Redis keeps one of the two.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (index, store) in stores.enumerated() {
                        let entry = CacheEntry(
                            result: ToolResult(.integer(Int64(index))), tool: tool, storedAt: now, freshUntil: now + .seconds(60))
                        group.addTask { try await store.set(key, entry, encodedValue: nil) }
                    }
                    try await group.waitForAll()
                }
                let winner = try await clients[0].send("GET", RedisKeySchema().cacheEntry(key.value))
                let expected = try CacheEntryCodec.decode(try #require(winner.bytes)).result.value
                // Once the announcements have arrived, every replica serves Redis's value.
                let coherent = await eventually(within: .seconds(2)) {
                    var all = true
                    for store in stores {
                        guard let value = try? await store.get(key)?.result.value, value == expected else { all = false; continue }
                    }
                    return all
                }
                if !coherent { incoherent += 1 }
            }
            #expect(incoherent == 0)
        }
    }
}

