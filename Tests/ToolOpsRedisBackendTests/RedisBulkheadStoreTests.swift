import Synchronization
import Testing
import ToolOpsCore
import ToolOpsRedis
@testable import ToolOpsRedisBackend
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
            // Releases are written without waiting for their replies: the last ones reach Redis a
            // moment after the calls return.
            let emptied = await waitFor(seconds: 2) { (try? await replicas[0].send("ZCARD", "toolops:bh:{bh:tool:t:x}")) == .integer(0) }
            #expect(emptied != nil, "every lease was given back")
        }
    }

    /// A call that runs three times its lease keeps its slot: the middleware renews the lease,
    /// so the bulkhead of one never admits a second call meanwhile.
    /// A large bulkhead (limit 64: up to 4 kept slots) cycles a busy replica's slots without
    /// round trips; other replicas see a kept slot in use until its hold ends, and stopping
    /// the store gives every kept slot back. (A 300 ms hold: the default 10 ms could pass
    /// between two steps of a loaded test.)
    @Test func releasedSlotsAreReusedAndGivenBackAfterTheirHold() async throws {
        try await withRedisServer { server in
            let redis = try client(server.url)
            let probe = try client(server.url)
            defer { redis.shutdown(); probe.shutdown() }
            let store = RedisBulkheadStore(client: redis, reuse: .init(hold: .milliseconds(300)))
            func inUse() async throws -> Int { try await probe.send("ZCARD", "toolops:bh:{shared}").int.map { Int($0) } ?? -1 }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await store.run() }
                #expect(await eventually { store.isKeepingSlots })
                // Sequential calls: the first asks Redis, the next 99 reuse its slot.
                let permit = try await store.acquire(key: "shared", limit: 64, lease: .seconds(30), maxWait: .zero)
                await store.release(permit)
                let before = try await probe.commandCalls()["evalsha"] ?? 0
                for _ in 0..<99 {
                    let again = try await store.acquire(key: "shared", limit: 64, lease: .seconds(30), maxWait: .zero)
                    #expect(again == permit)
                    await store.release(again)
                }
                #expect((try await probe.commandCalls()["evalsha"] ?? 0) - before == 0, "no round trip for a kept slot")
                #expect(try await inUse() == 1, "kept: in use for the other replicas")
                #expect(try await eventually(within: .seconds(2)) { try await inUse() == 0 }, "given back after the hold")
                // Callers that wait never take a kept slot (they queue across replicas).
                let kept = try await store.acquire(key: "shared", limit: 64, lease: .seconds(30), maxWait: .zero)
                await store.release(kept)
                let waiting = try await store.acquire(key: "shared", limit: 64, lease: .seconds(30), maxWait: .seconds(1))
                #expect(waiting != kept)
                await store.release(waiting)
                // Several kept at once, all given back when the store stops.
                var permits: [BulkheadPermit] = []
                for _ in 0..<6 { permits.append(try await store.acquire(key: "shared", limit: 64, lease: .seconds(30), maxWait: .zero)) }
                for permit in permits { await store.release(permit) }
                #expect(try await eventually(within: .seconds(2)) { try await inUse() == 0 }, "4 kept at most, for the hold")
                group.cancelAll()
            }
            #expect(try await eventually(within: .seconds(2)) { try await inUse() == 0 })
        }
    }

    @Test func aCallLongerThanItsLeaseKeepsItsSlot() async throws {
        try await withRedisServer { server in
            let client = try client(server.url)
            defer { client.shutdown() }
            let bulkhead = try BulkheadMiddleware(
                .init(maxConcurrent: 1, lease: .milliseconds(300)), store: RedisBulkheadStore(client: client))
            try await expectTheSlotHeld(by: bulkhead, for: .milliseconds(1000))
        }
    }

    /// Runs a call of `duration` through a bulkhead of one and tries another every 50 ms
    /// meanwhile: none may be admitted; one is once the first has ended.
    func expectTheSlotHeld(by bulkhead: BulkheadMiddleware, for duration: Duration) async throws {
        let started = Flag()
        let slow = ToolFunction { _ in
            started.set()
            try await Task.sleep(for: duration)
            return ToolResult("slow")
        }
        let quick = ToolFunction { _ in ToolResult("quick") }
        let call = try ToolCall(tool: ToolID("t:long"))
        async let long = bulkhead.run(call, next: slow)
        #expect(await eventually { started.isSet })
        var admitted = 0
        for _ in 0..<Int(duration / .milliseconds(50) * 0.8) {  // stop well before the call ends
            if (try? await bulkhead.run(call, next: quick)) != nil { admitted += 1 }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(admitted == 0, "a second call was admitted while the first still ran")
        #expect(try await long.value == "slow")
        #expect(try await bulkhead.run(call, next: quick).value == "quick")
    }

    /// The same with the store's service running: it renews the leases of calls in flight
    /// itself (one loop, no timer per call) and the middleware leaves the renewing to it.
    @Test func aCallLongerThanItsLeaseKeepsItsSlotWhenTheStoreRenewsIt() async throws {
        try await withRedisServer { server in
            let client = try client(server.url)
            defer { client.shutdown() }
            let store = RedisBulkheadStore(client: client)
            // The shortest lease the store renews itself: the call runs 2.5 leases.
            let bulkhead = try BulkheadMiddleware(.init(maxConcurrent: 1, lease: RedisBulkheadStore.selfRenewedLease), store: store)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await store.run() }
                #expect(await eventually { store.isKeepingSlots })
                let permit = try await store.acquire(key: "probe", limit: 1, lease: .seconds(1), maxWait: .zero)
                #expect(store.renewsLease(of: permit), "the store's service renews it")
                #expect(permit.renewedByStore, "and the permit says so: the middleware need not ask")
                let short = try await store.acquire(key: "short", limit: 1, lease: .milliseconds(300), maxWait: .zero)
                #expect(!store.renewsLease(of: short), "too short for its checks: the caller renews")
                #expect(!short.renewedByStore)
                await store.release(short)
                await store.release(permit)
                #expect(!store.renewsLease(of: permit), "released: nothing to renew")

                try await expectTheSlotHeld(by: bulkhead, for: .milliseconds(2500))
                group.cancelAll()
            }
        }
    }

    /// The key lives as long as its longest lease: a short lease taken after a long one must
    /// not shorten the key's expiry and lose the long lease with it.
    @Test func aShortLeaseDoesNotShortenALongOne() async throws {
        try await withRedisServer { server in
            let client = try client(server.url)
            defer { client.shutdown() }
            let store = RedisBulkheadStore(client: client)
            let long = try await store.acquire(key: "mixed", limit: 2, lease: .seconds(30), maxWait: .zero)
            _ = try await store.acquire(key: "mixed", limit: 2, lease: .milliseconds(100), maxWait: .zero)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await client.send("ZSCORE", "toolops:bh:{mixed}", String(long.token)) != .null)
            #expect((try await client.send("PTTL", "toolops:bh:{mixed}").int ?? 0) > 20_000)
            // The long lease still counts: one of two slots is free, not two.
            _ = try await store.acquire(key: "mixed", limit: 2, lease: .seconds(1), maxWait: .zero)
            await #expect(throws: ToolOpsError.self) { try await store.acquire(key: "mixed", limit: 2, lease: .seconds(1), maxWait: .zero) }
        }
    }

    /// Waiters on two replicas are admitted in the order they arrived, and a caller that does
    /// not wait cannot take a slot a waiter is owed.
    @Test func waitersAreServedFirstComeFirstServedAcrossReplicas() async throws {
        try await withRedisServer { server in
            let replicas = try (0..<2).map { _ in try client(server.url) }
            defer { replicas.forEach { $0.shutdown() } }
            let order = try await admissionOrder(replicas.map { RedisBulkheadStore(client: $0) }, probe: replicas[0])
            #expect(order == [0, 1, 2, 3, 4, 5])
        }
    }

    /// Six waiters queue one after another (alternating replicas) behind a held slot; returns
    /// the order they were admitted in.
    func admissionOrder(_ stores: [RedisBulkheadStore], probe: RedisClient) async throws -> [Int] {
        let holder = try await stores[0].acquire(key: "fifo", limit: 1, lease: .seconds(30), maxWait: .zero)
        let order = OrderLog()
        func queued() async -> Int64 { (try? await probe.send("ZCARD", "toolops:bhq:{fifo}").int) ?? -1 }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<6 {
                let store = stores[index % 2]
                group.addTask {
                    let permit = try await store.acquire(key: "fifo", limit: 1, lease: .seconds(30), maxWait: .seconds(20))
                    order.append(index)
                    try await Task.sleep(for: .milliseconds(20))
                    await store.release(permit)
                }
                // Each joins the queue before the next starts.
                let joined = await eventually { await queued() == Int64(index + 1) }
                #expect(joined)
            }
            // Barging: a caller that does not wait finds the freed slot owed to the queue.
            await stores[1].release(holder)
            let barged = try? await stores[1].acquire(key: "fifo", limit: 1, lease: .seconds(30), maxWait: .zero)
            #expect(barged == nil)
            try await group.waitForAll()
        }
        return order.items
    }

    /// A waiter whose replica died stops holding up the queue once its ticket lapses.
    @Test func aDeadWaitersTicketLeavesTheQueue() async throws {
        try await withRedisServer { server in
            let client = try client(server.url)
            defer { client.shutdown() }
            // A ticket queued as a waiter would, then never refreshed.
            _ = try await client.run(
                RedisBulkheadStore.acquireScript, keys: ["toolops:bh:{dead}", "toolops:bhq:{dead}", "toolops:bht:{dead}"],
                arguments: [0, 1000, "1", "ghost", 500])
            let store = RedisBulkheadStore(client: client)
            await #expect(throws: ToolOpsError.self) { try await store.acquire(key: "dead", limit: 1, lease: .seconds(5), maxWait: .zero) }
            try await Task.sleep(for: .milliseconds(600))
            _ = try await store.acquire(key: "dead", limit: 1, lease: .seconds(5), maxWait: .zero)
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

/// What happened, in order, from any task.
final class OrderLog: Sendable {
    private let state = Mutex<[Int]>([])
    func append(_ item: Int) { state.withLock { $0.append(item) } }
    var items: [Int] { state.withLock { $0 } }
}
