import Synchronization
import Testing
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Redis bulkhead store", .timeLimit(.minutes(1)))
struct RedisBulkheadStoreTests {
    func client(_ url: String) throws -> RedisClient { try RedisClient(url: url, logger: quietLogger) }

    @Test func concurrencyAcrossReplicasNeverExceedsTheLimit() async throws {
        try await withRedisServer { server in
            let replicas = try (0..<3).map { _ in try client(server.url) }
            defer { replicas.forEach { $0.shutdown() } }
            let limit = 4
            let gauge = Mutex((current: 0, peak: 0, completed: 0))
            let tool = ToolFunction { _ in
                gauge.withLock { $0.current += 1; $0.peak = max($0.peak, $0.current) }
                try await Task.sleep(for: .milliseconds(5))
                gauge.withLock { $0.current -= 1; $0.completed += 1 }
                return ToolResult("ok")
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for replica in replicas {
                    let bulkhead = try BulkheadMiddleware(
                        .init(maxConcurrent: limit, maxWait: .seconds(20), lease: .seconds(30)), store: RedisBulkheadStore(client: replica))
                    for _ in 0..<10 {
                        group.addTask { for _ in 0..<5 { _ = try await bulkhead.run(try ToolCall(tool: ToolID("t:x")), next: tool) } }
                    }
                }
                try await group.waitForAll()
            }
            let final = gauge.withLock { $0 }
            #expect(final.completed == 150)
            #expect(final.peak <= limit, "peak concurrency \(final.peak) across three replicas")
            #expect(final.peak == limit, "the slots were actually used")
            #expect(try await replicas[0].send("ZCARD", "toolops:bh:{bh:tool:t:x}") == .integer(0))
        }
    }

    @Test func leasesOfADeadReplicaExpireAndReleasesAreFenced() async throws {
        try await withRedisServer { server in
            let a = try client(server.url)
            let b = try client(server.url)
            defer { a.shutdown(); b.shutdown() }
            let storeA = RedisBulkheadStore(client: a)
            let storeB = RedisBulkheadStore(client: b)
            let held = try await storeA.acquire(key: "k", limit: 1, lease: .milliseconds(1500), maxWait: .zero)
            a.shutdown()  // replica A dies without releasing
            await #expect(throws: ToolOpsError.self) { try await storeB.acquire(key: "k", limit: 1, lease: .seconds(5), maxWait: .zero) }
            let started = ContinuousClock.now
            let permit = try await storeB.acquire(key: "k", limit: 1, lease: .seconds(5), maxWait: .seconds(8))
            #expect(ContinuousClock.now - started < .seconds(5), "the dead lease expired (1.5 s)")
            #expect(permit.token != held.token)
            await storeB.release(held)  // a late release of the dead lease frees nothing
            await #expect(throws: ToolOpsError.self) { try await storeB.acquire(key: "k", limit: 1, lease: .seconds(5), maxWait: .zero) }
            await storeB.release(permit)
            _ = try await storeB.acquire(key: "k", limit: 1, lease: .seconds(5), maxWait: .zero)
        }
    }

    @Test func aCancelledCallFreesItsSlotAtOnce() async throws {
        try await withRedisServer { server in
            let redis = try client(server.url)
            defer { redis.shutdown() }
            let store = RedisBulkheadStore(client: redis)
            let bulkhead = try BulkheadMiddleware(.init(maxConcurrent: 1, lease: .seconds(300)), store: store)
            let sleepy = ToolFunction { _ in try await Task.sleep(for: .seconds(60)); return ToolResult("late") }
            let holder = Task { try await bulkhead.run(try ToolCall(tool: ToolID("t:x")), next: sleepy) }
            var held = false
            for _ in 0..<500 where !held {
                held = try await redis.send("ZCARD", "toolops:bh:{bh:tool:t:x}") == .integer(1)
                if !held { try await Task.sleep(for: .milliseconds(5)) }
            }
            #expect(held)
            holder.cancel()
            _ = await holder.result
            // The release ran although its task was cancelled: the slot is free now, not in 5 minutes.
            #expect(try await redis.send("ZCARD", "toolops:bh:{bh:tool:t:x}") == .integer(0))
        }
    }

    @Test func aLeaseGrantedAfterTheFallbackDeadlineIsTakenBack() async throws {
        try await withRedisServer { server in
            let redis = try client(server.url)
            let stall = try client(server.url)
            defer { redis.shutdown(); stall.shutdown() }
            try await redis.send("PING")
            let store = try FallbackBulkheadStore(
                primary: RedisBulkheadStore(client: redis), mode: .local(), deadline: .milliseconds(100), probeInterval: .seconds(30))
            await store.release(try await store.acquire(key: "k", limit: 4, lease: .seconds(30), maxWait: .zero))  // script loaded
            // Redis holds every client's commands for 2 s (in force once CLIENT PAUSE answers):
            // the acquisition is written but answered only afterwards, long after the
            // fallback's deadline gave up on it.
            #expect(try await stall.send("CLIENT", "PAUSE", "2000", "ALL") == .simpleString("OK"))
            let permit = try await store.acquire(key: "k", limit: 4, lease: .seconds(30), maxWait: .zero)
            #expect(store.isDegraded)  // decided locally
            // The script did grant the lease once Redis woke; it must not hold a slot for 30 s.
            var leases: Int64 = -1
            for _ in 0..<200 {
                leases = try await stall.send("ZCARD", "toolops:bh:{k}").int ?? -1
                if leases == 0 { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(leases == 0)
            await store.release(permit)
        }
    }

    @Test func fallsBackToLocalSlotsWhenRedisDies() async throws {
        try await withRedisServer { server in
            var configuration = try RedisConfiguration(url: server.url)
            configuration.reconnect = ReconnectBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
            let redis = try RedisClient(configuration: configuration, logger: quietLogger)
            defer { redis.shutdown() }
            try await redis.send("PING")  // connected before the deadline matters
            let store = try FallbackBulkheadStore(
                primary: RedisBulkheadStore(client: redis), mode: .local(scale: 0.5), deadline: .seconds(1), probeInterval: .milliseconds(50))
            let remote = try await store.acquire(key: "k", limit: 4, lease: .seconds(30), maxWait: .zero)
            server.kill()
            let local1 = try await store.acquire(key: "k", limit: 4, lease: .seconds(30), maxWait: .zero)
            let local2 = try await store.acquire(key: "k", limit: 4, lease: .seconds(30), maxWait: .zero)
            #expect(store.isDegraded)
            await #expect(throws: ToolOpsError.self) { try await store.acquire(key: "k", limit: 4, lease: .seconds(30), maxWait: .zero) }
            await store.release(local1)
            _ = try await store.acquire(key: "k", limit: 4, lease: .seconds(30), maxWait: .zero)  // the freed local slot
            await store.release(remote)  // goes to Redis (down): nothing breaks
            _ = local2
            try server.start()
            var recovered = false
            for _ in 0..<200 where !recovered {
                try await Task.sleep(for: .milliseconds(20))
                if let permit = try? await store.acquire(key: "k2", limit: 4, lease: .seconds(30), maxWait: .zero) {
                    recovered = !store.isDegraded
                    await store.release(permit)
                }
            }
            #expect(recovered)
        }
    }
}
