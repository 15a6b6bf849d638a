import Foundation
import ServiceLifecycle
import Synchronization
import Testing
import ToolOpsCache
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

/// Real servers, real faults: a master killed under load (Redis Cluster and Sentinel), a server
/// that stops answering, connections killed or stalled on the path, keys evicted. Every policy
/// keeps its declared degraded mode while Redis is away, nothing throws past it, and everything
/// is back on Redis afterwards.
@Suite("Faults under load", .serialized, .timeLimit(.minutes(3)))
struct FaultTests {
    /// One name for the bucket, breaker and cache entry: `{svc:faulty}` puts them in one slot,
    /// on the master the tests kill.
    static let name = "svc:faulty"
    let limit = try! RateLimit(rate: 100, per: .seconds(1), burst: 10)
    let policy = try! CircuitBreakerPolicy(window: .time(.seconds(10)), failureRateThreshold: 0.5, minimumCalls: 100)

    struct Stores {
        let backend: RedisBackend
        let limits: FallbackRateLimitStore
        let breakers: FallbackCircuitBreakerStore
        let cache: FallbackCacheStore
    }

    func stores(_ url: String, _ change: (inout RedisConfiguration) -> Void = { _ in }) throws -> Stores {
        var configuration = try RedisConfiguration(url: url)
        configuration.connectTimeout = .milliseconds(200)
        configuration.commandTimeout = .milliseconds(300)
        configuration.reconnect = ReconnectBackoff(initialDelay: .milliseconds(10), maximumDelay: .milliseconds(100))
        change(&configuration)
        let backend = RedisBackend(
            client: try RedisClient(configuration: configuration, logger: quietLogger),
            configuration: .init(circuitBreaker: .init(flushInterval: .milliseconds(10)), probeInterval: .milliseconds(200)), logger: quietLogger)
        return Stores(
            backend: backend, limits: try backend.makeFallbackRateLimitStore(mode: .local()),
            breakers: try backend.makeFallbackCircuitBreakerStore(mode: .local()), cache: try backend.makeFallbackCacheStore(mode: .failOpen))
    }

    /// Runs the backend (probes, channels) around `body`.
    func running<T: Sendable>(_ stores: Stores, _ body: () async throws -> T) async throws -> T {
        let group = ServiceGroup(configuration: .init(services: [stores.backend], logger: quietLogger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            defer { tasks.cancelAll() }
            let result = try await body()
            await group.triggerGracefulShutdown()
            return result
        }
    }

    struct Report: CustomStringConvertible {
        var calls = 0
        var allowed = 0
        var errors: [String] = []
        var degradedFrom: Duration?
        var degradedUntil: Duration?
        var elapsed: Duration = .zero
        var description: String {
            "calls \(calls), allowed \(allowed), errors \(errors.count) \(errors.prefix(3)), degraded \(degradedFrom.map { "\($0)" } ?? "-")…\(degradedUntil.map { "\($0)" } ?? "-"), elapsed \(elapsed)"
        }
    }

    /// Calls every policy's store in a loop for `duration`, doing `fault` once after `faultAt`.
    func load(_ stores: Stores, for duration: Duration, faultAt: Duration, fault: @Sendable () throws -> Void) async throws -> Report {
        var report = Report()
        let started = ContinuousClock.now
        let key = try CacheKey(Self.name)
        var faulted = false
        while ContinuousClock.now - started < duration {
            let now = ContinuousClock.now - started
            if !faulted && now >= faultAt {
                try fault()
                faulted = true
            }
            report.calls += 1
            do {
                if try await stores.limits.acquire([RateLimitRequest(key: Self.name, limit: limit)], maxWait: .zero)[0].allowed { report.allowed += 1 }
                _ = try await stores.breakers.admit(key: Self.name, policy: policy)
                if try await stores.cache.get(key) == nil {
                    let wall = WallClock().now
                    try await stores.cache.set(key, CacheEntry(result: ToolResult(.integer(1)), tool: try ToolID("svc:faulty"), storedAt: wall, freshUntil: wall + .seconds(1)), encodedValue: nil)
                }
            } catch {
                report.errors.append("\(error)")
            }
            if stores.limits.isDegraded || stores.breakers.isDegraded || stores.cache.isDegraded {
                if report.degradedFrom == nil { report.degradedFrom = now }
                report.degradedUntil = ContinuousClock.now - started
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        report.elapsed = ContinuousClock.now - started
        return report
    }

    /// The documented bound (`Docs/operations.md`): Redis admits at most burst + rate × elapsed;
    /// while degraded to `local`, this replica's memory store admits at most burst + rate × the
    /// degraded time (plus a probe interval before Redis is tried again).
    func bound(_ report: Report) -> Int {
        let degraded = (report.degradedUntil ?? .zero) - (report.degradedFrom ?? .zero) + .milliseconds(200)
        func tokens(_ duration: Duration) -> Int { Int(limit.burst) + Int(Double(limit.rate) * (Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18)) }
        return tokens(report.elapsed) + tokens(degraded)
    }

    @Test func aClusterMasterKilledUnderLoadDegradesAndComesBack() async throws {
        try await withRedisCluster(masters: 3, replicasPerMaster: 1) { cluster in
            let stores = try stores(cluster.url)
            defer { stores.backend.client.shutdown() }
            let victim = try #require(try cluster.masterPort(forKey: stores.backend.keys.rateLimit(Self.name)))
            try await running(stores) {
                let report = try await load(stores, for: .seconds(7), faultAt: .seconds(1)) { cluster.server(port: victim)?.kill() }
                #expect(report.errors.isEmpty, "\(report)")
                let from = try #require(report.degradedFrom, "the fault was never noticed: \(report)")
                #expect(from >= .seconds(1) && from < .seconds(3), "\(report)")
                #expect(!stores.limits.isDegraded && !stores.breakers.isDegraded && !stores.cache.isDegraded, "back on Redis after the promotion: \(report)")
                #expect(report.allowed <= bound(report), "\(report), bound \(bound(report))")
                #expect(Double(report.allowed) >= Double(limit.rate) * 5, "kept admitting through the fault: \(report)")
                #expect(try await stores.backend.client.send("SET", stores.backend.keys.rateLimit(Self.name) + ":probe", "1") == .simpleString("OK"))
                #expect(try !cluster.masterPorts().contains(victim))
                print("cluster master kill -9: \(report)")
            }
        }
    }

    @Test func aSentinelFailoverUnderLoadDegradesAndComesBack() async throws {
        try await withRedisSentinel { group in
            let stores = try stores(group.url)
            defer { stores.backend.client.shutdown() }
            try await running(stores) {
                let report = try await load(stores, for: .seconds(8), faultAt: .seconds(1)) { group.master.kill() }
                #expect(report.errors.isEmpty, "\(report)")
                #expect(report.degradedFrom != nil, "\(report)")
                #expect(!stores.limits.isDegraded && !stores.breakers.isDegraded && !stores.cache.isDegraded, "\(report)")
                #expect(report.allowed <= bound(report), "\(report), bound \(bound(report))")
                #expect(try await stores.backend.client.masters() == [.tcp(host: "127.0.0.1", port: group.replica.port)])
                print("sentinel master kill -9: \(report)")
            }
        }
    }

    /// `DEBUG SLEEP` longer than the command timeout: commands time out (typed), the stores
    /// degrade instead of waiting, and come back when the server answers again.
    @Test func aServerThatStopsAnsweringIsTimedOutAndRecovered() async throws {
        try await withRedisServer { server in
            let stores = try stores(server.url)
            defer { stores.backend.client.shutdown() }
            let admin = try RedisClient(url: server.url, logger: quietLogger)
            defer { admin.shutdown() }
            try await running(stores) {
                let report = try await load(stores, for: .seconds(4), faultAt: .milliseconds(500)) {
                    // Not awaited: the server sleeps 1.5 s; this connection gets its reply then.
                    _ = admin.sendUnawaited([RedisCommand("DEBUG", "SLEEP", "1.5")])
                }
                #expect(report.errors.isEmpty, "\(report)")
                #expect(report.degradedFrom != nil, "\(report)")
                #expect(!stores.limits.isDegraded, "\(report)")
                // A command of its own times out with a typed error, not a hang.
                _ = admin.sendUnawaited([RedisCommand("DEBUG", "SLEEP", "1")])
                try await Task.sleep(for: .milliseconds(50))
                do {
                    try await stores.backend.client.send("PING")
                    Issue.record("PING answered during DEBUG SLEEP")
                } catch let error as RedisClientError {
                    #expect(error.code == .commandTimeout, "\(error)")
                }
                print("DEBUG SLEEP 1.5 s (command timeout 300 ms): \(report)")
            }
        }
    }

    /// Every connection killed by the server (`CLIENT KILL`): the client reconnects, the
    /// channels are followed again, and nothing throws past the degraded modes.
    @Test func everyConnectionKilledByTheServerIsReplaced() async throws {
        try await withRedisServer { server in
            let stores = try stores(server.url)
            defer { stores.backend.client.shutdown() }
            let admin = try RedisClient(url: server.url, logger: quietLogger)
            defer { admin.shutdown() }
            let cacheStore = try stores.backend.makeCacheStore()
            try await running(stores) {
                #expect(await eventually { cacheStore.isNearCacheActive })
                let killer = Task {
                    try await Task.sleep(for: .milliseconds(500))
                    for type in ["normal", "pubsub"] { _ = try await admin.send("CLIENT", "KILL", "TYPE", type, "SKIPME", "yes") }
                }
                let report = try await load(stores, for: .seconds(3), faultAt: .seconds(10)) {}
                try await killer.value
                #expect(report.errors.isEmpty, "\(report)")
                #expect(try await stores.backend.client.send("PING") == .simpleString("PONG"), "a new connection")
                #expect(cacheStore.channelLosses >= 1, "the subscription was killed too")
                #expect(await eventually(within: .seconds(5)) { cacheStore.isNearCacheActive }, "the channel is followed again")
            }
        }
    }

    /// A stalled path (packets stop, connections stay open) and a dropped one (every connection
    /// closed, new ones refused), through a TCP proxy between the client and Redis.
    @Test func aStalledOrDroppedNetworkPathDegradesAndRecovers() async throws {
        try await withRedisServer { server in
            let proxy = try TCPFaultProxy(targetPort: server.port)
            defer { proxy.stop() }
            let stores = try stores("redis://127.0.0.1:\(proxy.port)")
            defer { stores.backend.client.shutdown() }
            try await running(stores) {
                for fault in [TCPFaultProxy.Mode.stall, .drop] {
                    let healer = Task {
                        try await Task.sleep(for: .milliseconds(1_500))
                        proxy.mode = .pass
                    }
                    let report = try await load(stores, for: .seconds(3), faultAt: .milliseconds(300)) { proxy.mode = fault }
                    try await healer.value
                    #expect(report.errors.isEmpty, "\(fault): \(report)")
                    #expect(report.degradedFrom != nil, "\(fault): \(report)")
                    #expect(report.allowed <= bound(report), "\(fault): \(report)")
                    #expect(!stores.limits.isDegraded, "\(fault): back on Redis: \(report)")
                    #expect(try await stores.backend.client.send("PING") == .simpleString("PONG"), "\(fault)")
                    print("network \(fault) for 1.2 s: \(report)")
                }
            }
        }
    }

    /// Keys evicted under memory pressure: buckets start over full (never more than a burst at
    /// once), the cache misses, breakers rebuild their state — and nothing fails.
    @Test func evictedKeysResetSafely() async throws {
        try await withRedisServer { server in
            let stores = try stores(server.url)
            defer { stores.backend.client.shutdown() }
            let admin = try RedisClient(url: server.url, logger: quietLogger)
            defer { admin.shutdown() }
            let slow = try RateLimit(rate: 1, per: .seconds(100), burst: 5)
            func admitted(_ key: String) async throws -> Int {
                // A fresh store each time (as another replica): a store remembers its own refusals.
                let limits = stores.backend.makeRateLimitStore()
                var count = 0
                for _ in 0..<10 where try await limits.acquire([RateLimitRequest(key: key, limit: slow)], maxWait: .zero)[0].allowed { count += 1 }
                return count
            }
            #expect(try await admitted("evicted") == 5)
            let used = try await admin.send("INFO", "memory").string?.split(separator: "\r\n")
                .first { $0.hasPrefix("used_memory:") }.flatMap { Int($0.dropFirst("used_memory:".count)) } ?? 0
            try await admin.send("CONFIG", "SET", "maxmemory-policy", "allkeys-random")
            try await admin.send("CONFIG", "SET", "maxmemory", used + 2 << 20)
            let junk = [UInt8](repeating: 0x61, count: 64 << 10)
            for index in 0..<200 { try await admin.send("SET", "junk:\(index)", junk) }
            let evicted = try await admin.send("DBSIZE").int ?? 0 < 201
            #expect(evicted, "the memory limit evicted keys")
            let left = try await admin.send("EXISTS", stores.backend.keys.rateLimit("evicted")).int ?? -1
            let afterEviction = try await admitted("evicted")
            // A vanished bucket starts full: at most one more burst; a kept one still refuses. Never an error.
            #expect(left == 1 ? afterEviction == 0 : afterEviction == 5, "left \(left), admitted \(afterEviction)")
            try await running(stores) {
                let report = try await load(stores, for: .seconds(1), faultAt: .zero) {}
                #expect(report.errors.isEmpty, "\(report)")
                #expect(!stores.limits.isDegraded && !stores.cache.isDegraded)
            }
            try await admin.send("CONFIG", "SET", "maxmemory", 0)
        }
    }
}
