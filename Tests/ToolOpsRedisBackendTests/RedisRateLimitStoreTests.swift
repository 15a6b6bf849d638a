import Foundation
import Synchronization
import Testing
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

// Serialized: three of these tests saturate a limit with many callers for a second each, and
// overlapping they would measure each other's load rather than the limiter.
@Suite("Redis rate-limit store", .serialized, .timeLimit(.minutes(1)))
struct RedisRateLimitStoreTests {
    func client(_ url: String) throws -> RedisClient { try RedisClient(url: url, logger: quietLogger) }

    func evalshaCalls(_ client: RedisClient) async throws -> (evalsha: Int, total: Int) {
        let calls = try await client.commandCalls()
        // TIME, GET and SET run inside the script; count only what clients sent.
        let total = calls.filter { !["time", "get", "set"].contains($0.key) }.values.reduce(0, +)
        return (calls["evalsha"] ?? 0, total)
    }

    /// Redis' clock, µs: elapsed times measured by the server the limits run on.
    func serverMicros(_ probe: RedisClient) async throws -> Int64 {
        let time = try await probe.send("TIME").array ?? []
        return (time.first?.int ?? 0) * 1_000_000 + (time.last?.int ?? 0)
    }

    @Test func gcraDecisionsAndExactlyOneRoundTripEach() async throws {
        try await withRedisServer { server in
            let redis = try client(server.url)
            let probe = try client(server.url)
            defer { redis.shutdown(); probe.shutdown() }
            let store = RedisRateLimitStore(client: redis, keys: RedisKeySchema(prefix: "t"))
            let limit = try RateLimit(rate: 10, per: .seconds(100), burst: 3)  // slow refill: no drift during the test
            let tool = RateLimitRequest(key: "tool", limit: limit)
            let tenant = RateLimitRequest(key: "tenant", limit: try RateLimit(rate: 1000, per: .seconds(100_000), burst: 1000))
            _ = try await store.acquire([tool], maxWait: .zero)  // loads the script
            let before = try await evalshaCalls(probe)
            var decisions: [[RateLimitDecision]] = []
            for _ in 0..<4 { decisions.append(try await store.acquire([tool, tenant], maxWait: .zero)) }
            let after = try await evalshaCalls(probe)
            #expect(after.evalsha - before.evalsha == 4, "one EVALSHA per decision, however many limits")
            #expect(after.total - before.total == 4 + 1, "nothing else but the INFO probe itself")
            #expect(decisions.map { $0[0].allowed } == [true, true, false, false])
            #expect(decisions[0][0].remaining == 1 && decisions[1][0].remaining == 0)
            let refused = decisions[2]
            #expect(refused[1].allowed == false, "all or nothing")
            #expect(refused[0].retryAfter > .seconds(5) && refused[0].retryAfter <= .seconds(10))  // one 10 s interval, minus elapsed time
            // The refused batches took nothing from the tenant bucket: 2 spent of 1000.
            #expect(try await store.acquire([tenant], maxWait: .zero)[0].remaining == 997)
            // Keys follow the schema and expire when the bucket would be full again.
            let ttl = try await probe.send("PTTL", "t:rl:{tool}").int ?? -1
            #expect(ttl > 0 && ttl <= 30_000 + 2)
        }
    }

    @Test func threeReplicasShareOneLimit() async throws {
        try await withRedisServer { server in
            let replicas = try (0..<3).map { _ in try client(server.url) }
            let probe = try client(server.url)
            defer { (replicas + [probe]).forEach { $0.shutdown() } }
            // A rate each replica alone could exceed many times over, even on a loaded machine,
            // so the limit is saturated for as long as anyone hammers.
            let (rate, burst) = (20, 5)
            let limit = try RateLimit(rate: rate, per: .seconds(1), burst: burst)
            // Connect every replica and load the script first, so all callers hammer the same 1.2 s.
            for replica in replicas {
                _ = try await RedisRateLimitStore(client: replica).acquire([RateLimitRequest(key: "warm-up", limit: limit)], maxWait: .zero)
            }
            let start = try await serverMicros(probe)
            let until = ContinuousClock.now + .milliseconds(1200)
            // Each caller reports how many it was allowed and when it really started and stopped.
            let results = try await withThrowingTaskGroup(of: (Int, ContinuousClock.Instant, ContinuousClock.Instant).self) { group in
                for replica in replicas {
                    let store = RedisRateLimitStore(client: replica)
                    for _ in 0..<8 {  // 8 concurrent callers per replica
                        group.addTask {
                            var allowed = 0
                            let began = ContinuousClock.now
                            while ContinuousClock.now < until {
                                if try await store.acquire([RateLimitRequest(key: "shared", limit: limit)], maxWait: .zero)[0].allowed {
                                    allowed += 1
                                } else {
                                    // A remembered refusal takes a microsecond: without a pause the callers would
                                    // spin both cores for the whole second, loading every other test.
                                    try await Task.sleep(for: .milliseconds(1))
                                }
                            }
                            return (allowed, began, ContinuousClock.now)
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let allowed = results.reduce(0) { $0 + $1.0 }
            // While any caller ran, the limit was saturated (one caller alone far exceeds 20/s).
            let saturated = (results.map(\.2).max()! - results.map(\.1).min()!).secondsDouble
            let elapsed = Double(try await serverMicros(probe) - start) / 1e6
            let ceiling = Double(burst) + Double(rate) * elapsed
            #expect(Double(allowed) <= ceiling, "allowed \(allowed) over \(elapsed) s (server time); ceiling \(ceiling)")
            let floor = Double(burst) + Double(rate) * saturated
            // Not much less either: serially within 10 %; 25 % leaves room for the whole suite
            // running in parallel on 2 cores (when even 24 callers barely keep up), and still
            // fails a limiter that refuses tokens it has (double counting halves the rate).
            #expect(Double(allowed) >= floor * 0.75, "allowed \(allowed); saturated for \(saturated) s: \(floor)")
        }
    }

    /// A bucket busy enough to lease: 200/s puts 20 tokens in a 100 ms window. Three replicas
    /// with eight callers each spend it for a second in batches — far fewer round trips than
    /// decisions — and the cluster still admits no more than the limit, and not much less;
    /// with the stores' services running (`refillsAhead`), batches are also fetched ahead of
    /// need, and unspent tokens carried into the refill must not break the limit either.
    @Test(arguments: [false, true])
    func busyBucketsAreLeasedInBatchesWithinTheClusterLimit(refillsAhead: Bool) async throws {
        try await withRedisServer { server in
            let replicas = try (0..<3).map { _ in try client(server.url) }
            let probe = try client(server.url)
            defer { (replicas + [probe]).forEach { $0.shutdown() } }
            // Low enough for 24 callers to saturate while the rest of the suite loads both cores
            // (a round trip can then take tens of milliseconds: hence the long window).
            let (rate, burst) = (200, 40)
            let limit = try RateLimit(rate: rate, per: .seconds(1), burst: burst)
            let stores = replicas.map { RedisRateLimitStore(client: $0, leasing: .init(window: .milliseconds(100))) }
            let services = Task {
                await withDiscardingTaskGroup { group in
                    if refillsAhead { for store in stores { group.addTask { await store.run() } } }
                }
            }
            defer { services.cancel() }
            for store in stores { _ = try await store.acquire([RateLimitRequest(key: "warm-up", limit: limit)], maxWait: .zero) }
            let before = try await evalshaCalls(probe)
            let start = try await serverMicros(probe)
            let until = ContinuousClock.now + .milliseconds(1000)
            let results = try await withThrowingTaskGroup(of: (allowed: Int, decisions: Int, began: ContinuousClock.Instant, ended: ContinuousClock.Instant).self) { group in
                for store in stores {
                    for _ in 0..<8 {
                        group.addTask {
                            var (allowed, decisions) = (0, 0)
                            let began = ContinuousClock.now
                            while ContinuousClock.now < until {
                                decisions += 1
                                if try await store.acquire([RateLimitRequest(key: "busy", limit: limit)], maxWait: .zero)[0].allowed {
                                    allowed += 1
                                } else {
                                    // A remembered refusal takes a microsecond: without a pause, 24 callers
                                    // spinning on them would starve the replies that bring tokens.
                                    try await Task.sleep(for: .milliseconds(1))
                                }
                            }
                            return (allowed, decisions, began, ContinuousClock.now)
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let elapsed = Double(try await serverMicros(probe) - start) / 1e6
            let after = try await evalshaCalls(probe)
            let allowed = results.reduce(0) { $0 + $1.allowed }
            let decisions = results.reduce(0) { $0 + $1.decisions }
            let ceiling = Double(burst) + Double(rate) * elapsed
            #expect(Double(allowed) <= ceiling, "allowed \(allowed) over \(elapsed) s (server time); ceiling \(ceiling)")
            let saturated = (results.map(\.ended).max()! - results.map(\.began).min()!).secondsDouble
            #expect(Double(allowed) >= (Double(burst) + Double(rate) * saturated) * 0.75, "allowed \(allowed) in \(saturated) s")
            #expect(decisions > allowed * 2, "the limit was contended: \(decisions) decisions")
            #expect(after.evalsha - before.evalsha < decisions / 3, "\(after.evalsha - before.evalsha) round trips for \(decisions) decisions")
        }
    }

    /// With the store's service running, a busy bucket's next batch is fetched before the last
    /// one runs out: paced calls are all decided from tokens held here. Without it, the first
    /// call of each window finds the bucket empty and waits for a round trip.
    @Test func busyBucketsAreRefilledAheadSoCallsDoNotWait() async throws {
        try await withRedisServer { server in
            let client = try client(server.url)
            defer { client.shutdown() }
            // 2,000 tokens a 20 ms window: never refused, batches follow the demand.
            let limit = try RateLimit(rate: 100_000, burst: 100_000)

            /// Calls one every ~half millisecond for 100 windows' worth; returns how many could
            /// not be decided from leased tokens (they went to Redis and waited).
            func waits(_ store: RedisRateLimitStore, key: String) async throws -> Int {
                let request = RateLimitRequest(key: key, limit: limit)
                for _ in 0..<50 {  // the demand becomes known
                    _ = try await store.acquire([request], maxWait: .zero)
                    try await Task.sleep(for: .microseconds(500))
                }
                var waited = 0
                let until = ContinuousClock.now + .milliseconds(400)
                while ContinuousClock.now < until {
                    if store.decideLocally(request) == nil {
                        waited += 1
                        #expect(try await store.acquire([request], maxWait: .zero)[0].allowed)
                    }
                    try await Task.sleep(for: .microseconds(500))
                }
                return waited
            }

            let plain = RedisRateLimitStore(client: client)
            let withoutService = try await waits(plain, key: "plain")
            let refilled = RedisRateLimitStore(client: client)
            let withService = try await withThrowingTaskGroup(of: Int?.self) { group in
                group.addTask {
                    await refilled.run()
                    return nil
                }
                let count = try await waits(refilled, key: "refilled")
                group.cancelAll()
                return count
            }
            #expect(withoutService >= 10, "one wait per window without refills ahead: \(withoutService)")
            #expect(withService * 5 <= withoutService, "refilled ahead: \(withService) waits against \(withoutService)")
        }
    }

    /// A refusal is remembered until its retryAfter: calls on an empty bucket cost no round trip.
    @Test func refusalsAreRememberedUntilTheirRetryAfter() async throws {
        try await withRedisServer { server in
            let redis = try client(server.url)
            let probe = try client(server.url)
            defer { redis.shutdown(); probe.shutdown() }
            let store = RedisRateLimitStore(client: redis)
            let limit = try RateLimit(rate: 1, per: .seconds(100), burst: 1)
            let request = RateLimitRequest(key: "empty", limit: limit)
            #expect(try await store.acquire([request], maxWait: .zero)[0].allowed)
            let before = try await evalshaCalls(probe)
            var refusals: [RateLimitDecision] = []
            for _ in 0..<10 { refusals.append(try await store.acquire([request], maxWait: .zero)[0]) }
            let after = try await evalshaCalls(probe)
            #expect(refusals.allSatisfy { !$0.allowed && $0.retryAfter > .seconds(90) && $0.retryAfter <= .seconds(100) })
            #expect(after.evalsha - before.evalsha == 1, "the first refusal asked Redis; the other nine did not")
            // Another replica (another store) still asks Redis, and is refused by it too.
            #expect(try await RedisRateLimitStore(client: redis).acquire([request], maxWait: .zero)[0].allowed == false)
        }
    }

    /// Three OS processes (four callers each) spend one Redis limit for a second.
    @Test func threeProcessesShareOneLimit() async throws {
        try await withRedisServer { server in
            let binary = try #require(probeBinary(), "the toolops-test-probe executable must be built next to the tests")
            let probe = try client(server.url)
            defer { probe.shutdown() }
            let (rate, burst) = (100, 10)
            let startAt = SystemClock().now + .milliseconds(800)
            var processes: [(Process, Pipe)] = []
            for _ in 0..<3 {
                let process = Process()
                let pipe = Pipe()
                process.executableURL = URL(fileURLWithPath: binary)
                process.arguments = ["redis-ratelimit", "--url", server.url, "--rate", "\(rate)", "--burst", "\(burst)",
                                     "--duration-ms", "1000", "--start-at", "\(startAt.nanoseconds)"]
                process.standardOutput = pipe
                process.standardError = FileHandle.nullDevice
                try process.run()
                processes.append((process, pipe))
            }
            let start = try await serverMicros(probe)
            var allowed = 0
            var decisions = 0
            for (process, pipe) in processes {
                let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                let fields = output.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
                try #require(fields.count == 2, "unexpected output: \(output)")
                allowed += fields[0]
                decisions += fields[1]
            }
            let elapsed = Double(try await serverMicros(probe) - start) / 1e6  // includes start-up: an upper bound
            #expect(Double(allowed) <= Double(burst) + Double(rate) * elapsed, "allowed \(allowed) in ≤ \(elapsed) s")
            #expect(Double(allowed) >= Double(burst + rate) * 0.9, "allowed \(allowed) of \(decisions) decisions in 1 s")
            #expect(decisions > allowed * 3, "the limit was actually contended")
        }
    }

    @Test func scriptFlushAndClientKillAreInvisible() async throws {
        try await withRedisServer { server in
            let redis = try client(server.url)
            let probe = try client(server.url)
            defer { redis.shutdown(); probe.shutdown() }
            let store = RedisRateLimitStore(client: redis)
            let limit = try RateLimit(rate: 1000, burst: 1000)
            #expect(try await store.acquire([RateLimitRequest(key: "k", limit: limit)], maxWait: .zero)[0].allowed)
            try await probe.send("SCRIPT", "FLUSH")
            #expect(try await store.acquire([RateLimitRequest(key: "k", limit: limit)], maxWait: .zero)[0].allowed)
            let killed = try await probe.send("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").int ?? 0
            #expect(killed >= 1)
            // The client notices the killed idle connection by itself (no command needed)…
            #expect(await eventually { redis.liveConnections == 0 })
            // …so every decision after that succeeds at the first try, on a new connection.
            for _ in 0..<3 { #expect(try await store.acquire([RateLimitRequest(key: "k", limit: limit)], maxWait: .zero)[0].allowed) }
            #expect(redis.liveConnections == 1)
        }
    }

    @Test func backgroundProbesSwitchBackWithoutTraffic() async throws {
        try await withRedisServer { server in
            var configuration = try RedisConfiguration(url: server.url)
            configuration.reconnect = ReconnectBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
            let redis = try RedisClient(configuration: configuration, logger: quietLogger)
            defer { redis.shutdown() }
            let store = try FallbackRateLimitStore(
                primary: RedisRateLimitStore(client: redis), deadline: .seconds(1), probeInterval: .milliseconds(50))
            let probes = Task { await store.runProbes { try await redis.send("PING") } }
            defer { probes.cancel() }
            server.kill()
            _ = try await store.acquire([RateLimitRequest(key: "k", limit: try RateLimit(rate: 10))], maxWait: .zero)
            #expect(store.isDegraded)
            try server.start()
            var recovered = false
            for _ in 0..<250 where !recovered {
                try await Task.sleep(for: .milliseconds(20))
                recovered = !store.isDegraded  // no decisions are made meanwhile
            }
            #expect(recovered)
        }
    }

    @Test func redisSayingNoIsNotAnOutage() async throws {
        try await withRedisServer { server in
            let redis = try client(server.url)
            defer { redis.shutdown() }
            try await redis.send("HSET", "toolops:rl:{wrong}", "f", "v")  // a bucket key of the wrong type
            let events = EventLog()
            // A generous deadline: this test is about error classification, not latency.
            let store = try FallbackRateLimitStore(primary: RedisRateLimitStore(client: redis), deadline: .seconds(5), observer: events.observer)
            let error = await #expect(throws: RedisClientError.self) {
                try await store.acquire([RateLimitRequest(key: "wrong", limit: try RateLimit(rate: 1))], maxWait: .zero)
            }
            #expect(error?.isUnavailable == false)
            #expect(!store.isDegraded && events.count == 0)
        }
    }

    @Test(arguments: ["local", "open", "closed"])
    func degradedModesWhenRedisDiesAndRecoveryAfterRestart(mode: String) async throws {
        try await withRedisServer { server in
            var configuration = try RedisConfiguration(url: server.url)
            configuration.reconnect = ReconnectBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
            let redis = try RedisClient(configuration: configuration, logger: quietLogger)
            defer { redis.shutdown() }
            // Connected, script loaded: the deadline below is about outages, not first contact.
            _ = try await RedisRateLimitStore(client: redis).acquire([RateLimitRequest(key: "warm-up", limit: try RateLimit(rate: 1))], maxWait: .zero)
            let events = EventLog()
            let degradedMode: DegradedMode = mode == "local" ? .local(scale: 0.5) : mode == "open" ? .failOpen : .failClosed
            let store = try FallbackRateLimitStore(
                primary: RedisRateLimitStore(client: redis), mode: degradedMode, deadline: .seconds(1),
                probeInterval: .milliseconds(100), observer: events.observer)
            let limit = try RateLimit(rate: 10, per: .seconds(100), burst: 10)
            let request = RateLimitRequest(key: "k-\(mode)", limit: limit)
            #expect(try await store.acquire([request], maxWait: .zero)[0].allowed)
            #expect(!store.isDegraded)

            server.kill()
            var outcomes: [Bool] = []
            for _ in 0..<12 {
                let started = ContinuousClock.now
                outcomes.append(try await store.acquire([request], maxWait: .zero)[0].allowed)
                #expect(ContinuousClock.now - started < .seconds(3), "no decision hangs past the deadline")
            }
            #expect(store.isDegraded)
            switch mode {
            case "local": #expect(outcomes.filter { $0 }.count == 5)  // burst 10 × scale 0.5
            case "open": #expect(outcomes.allSatisfy { $0 })
            default: #expect(outcomes.allSatisfy { !$0 })
            }

            try server.start()
            var recovered = false
            let restarted = ContinuousClock.now
            while !recovered && ContinuousClock.now - restarted < .seconds(5) {
                _ = try await store.acquire([request], maxWait: .zero)
                recovered = !store.isDegraded
                if !recovered { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(recovered, "back on Redis after a restart")
            #expect(events.names == ["degraded", "recovered"])
        }
    }
}

final class EventLog: Sendable {
    private let events = Mutex<[String]>([])
    var observer: ResilienceObserver {
        { event in
            switch event {
            case .storeDegraded: self.events.withLock { $0.append("degraded") }
            case .storeRecovered: self.events.withLock { $0.append("recovered") }
            default: break
            }
        }
    }
    var names: [String] { events.withLock { $0 } }
    var count: Int { names.count }
}

@Suite("README Redis example", .timeLimit(.minutes(1)))
struct ReadmeRedisExampleTests {
    @Test func readmeClusterLimiterRuns() async throws {
        try await withRedisServer { server in
            let redis = try RedisClient(url: server.url, logger: quietLogger)
            defer { redis.shutdown() }
            // Connected and script loaded, as in a running service (a cold first call on a loaded
            // test machine can exceed the 100 ms deadline and be decided locally, by design).
            try await redis.send("SCRIPT", "LOAD", RedisRateLimitStore.script.source)
            // As in the README, with a deadline generous enough for a loaded test machine.
            let limits = try FallbackRateLimitStore(primary: RedisRateLimitStore(client: redis), mode: .local(scale: 1.0 / 3), deadline: .seconds(2))
            let limiter = try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: try RateLimit(rate: 100), key: .tenant)]), store: limits)
            var context = ToolCall(tool: try ToolID("t:x")).context
            context.toolTenant = "acme"
            let call = ToolCall(tool: try ToolID("t:x"), context: context)
            let ok = ToolFunction { _ in ToolResult("ok") }
            #expect(try await limiter.run(call, next: ok).value == "ok")
            // Decided in Redis (the bucket key itself expires 10 ms later, when the bucket is full again).
            #expect(!limits.isDegraded)
            let stats = try await redis.send("INFO", "commandstats").string ?? ""
            #expect(stats.contains("cmdstat_evalsha:calls=1,"))
        }
    }
}
