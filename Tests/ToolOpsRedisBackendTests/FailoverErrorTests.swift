import Testing
import ToolOpsCache
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

/// Server errors that mean "Redis is not available for this right now" make the stores
/// degrade, against real servers that answer them.
@Suite("Failover-aware errors", .timeLimit(.minutes(1)))
struct FailoverErrorTests {
    let request = RateLimitRequest(key: "k", limit: try! RateLimit(rate: 10))

    @Test func errorRepliesAreClassified() {
        for message in [
            "READONLY You can't write against a read only replica.", "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script.", "MASTERDOWN Link with MASTER is down",
            "TRYAGAIN Multiple keys request during rehashing of slot", "CLUSTERDOWN The cluster is down",
        ] {
            let error = RedisClientError.reply(message)
            #expect(error.code == .serverUnavailable && error.isUnavailable, "\(message)")
        }
        for message in ["ERR unknown command", "WRONGTYPE Operation against a key", "NOSCRIPT No matching script", "NOPERM no permission"] {
            let error = RedisClientError.reply(message)
            #expect(error.code == .serverError && !error.isUnavailable, "\(message)")
        }
    }

    /// A replica of a primary that is not there: the old primary after a failover, say.
    func withReplica<T>(serveStaleData: Bool = true, _ body: (RedisServer) async throws -> T) async throws -> T {
        let nobody = try RedisServer.freePort()
        return try await withRedisServer(
            .init(extraArguments: ["--replicaof", "127.0.0.1", "\(nobody)", "--replica-serve-stale-data", serveStaleData ? "yes" : "no"]),
            body)
    }

    @Test func writesToAReplicaAreUnavailableAndTheConnectionIsReplaced() async throws {
        try await withReplica { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            #expect(try await client.send("GET", "k") == .null)  // reads still work
            let error = await #expect(throws: RedisClientError.self) { try await client.send("SET", "k", "v") }
            #expect(error?.code == .serverUnavailable && error?.serverErrorPrefix == "READONLY")
            // The connection that reached a replica is closed (a new one resolves the name again).
            #expect(await eventually { client.liveConnections == 0 })

            let limits = try FallbackRateLimitStore(primary: RedisRateLimitStore(client: client), deadline: .seconds(2))
            #expect(try await limits.acquire([request], maxWait: .zero)[0].allowed)  // decided locally…
            #expect(limits.isDegraded)  // …because Redis could not take the write
            // An operator's write to a breaker is reported as an outage, not as a bug.
            let policy = try CircuitBreakerPolicy(window: .time(.seconds(10)))
            let breakers = RedisCircuitBreakerStore(client: client)
            let outage = await #expect(throws: ToolOpsError.self) { try await breakers.control(key: "svc", .forceOpen, policy: policy) }
            #expect(outage?.code == .storeUnavailable)
        }
    }

    @Test func aReplicaCutOffFromItsPrimaryDegradesTheCache() async throws {
        try await withReplica(serveStaleData: false) { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let error = await #expect(throws: RedisClientError.self) { try await client.send("GET", "k") }
            #expect(error?.code == .serverUnavailable && error?.serverErrorPrefix == "MASTERDOWN")
            let cache = try FallbackCacheStore(
                primary: try RedisCacheStore(client: client, configuration: .init(nearCache: nil)), deadline: .seconds(2))
            #expect(try await cache.get(try CacheKey("search:web:k")) == nil)
            #expect(cache.isDegraded)
        }
    }

    @Test func aBusyServerDegradesTheStoresUntilTheScriptIsKilled() async throws {
        try await withRedisServer(.init(extraArguments: ["--busy-reply-threshold", "100"])) { server in
            let blocker = try RedisClient(url: server.url, logger: quietLogger)
            var configuration = try RedisConfiguration(url: server.url)
            configuration.commandTimeout = .seconds(10)
            let client = try RedisClient(configuration: configuration, logger: quietLogger)
            let admin = try RedisClient(url: server.url, logger: quietLogger)
            defer { [blocker, client, admin].forEach { $0.shutdown() } }
            _ = try await admin.send("PING")
            let limits = try FallbackRateLimitStore(
                primary: RedisRateLimitStore(client: client), deadline: .seconds(5), probeInterval: .milliseconds(50))
            #expect(try await limits.acquire([request], maxWait: .zero)[0].allowed && !limits.isDegraded)
            let busy = Task { try await blocker.send("EVAL", "while true do end", 0) }
            // BUSY is answered once the script has run past the threshold.
            #expect(await eventually {
                (try? await admin.send("PING")) == nil
            })
            let error = await #expect(throws: RedisClientError.self) { try await client.send("GET", "k") }
            #expect(error?.code == .serverUnavailable && error?.serverErrorPrefix == "BUSY")
            #expect(try await limits.acquire([request], maxWait: .zero)[0].allowed)
            #expect(limits.isDegraded)
            _ = try await admin.send("SCRIPT", "KILL")
            _ = await busy.result
            try await Task.sleep(for: .milliseconds(60))  // the probe interval passes
            #expect(try await limits.acquire([request], maxWait: .zero)[0].allowed)
            #expect(!limits.isDegraded)  // back on Redis
        }
    }
}

/// A certificate that does not verify is a configuration error or an interception, never an
/// outage to ride out: the fallback stores stay out of it and the health check says so.
@Suite("TLS verification failures stay loud", .timeLimit(.minutes(1)))
struct TLSVerificationFailureTests {
    @Test func aWrongCAFailsCallsInsteadOfDegradingAndMakesRedisUnhealthy() async throws {
        var options = RedisServer.Options()
        options.tls = TestCertificates.shared.serverFiles
        try await withRedisServer(options) { server in
            var configuration = try RedisConfiguration(url: server.url)
            configuration.tls = .enabled(caFile: TestCertificates.shared.otherCACert)
            let client = try RedisClient(configuration: configuration, logger: quietLogger)
            defer { client.shutdown() }
            let limits = try FallbackRateLimitStore(primary: RedisRateLimitStore(client: client), deadline: .seconds(2))
            let request = RateLimitRequest(key: "k", limit: try RateLimit(rate: 10))
            let error = await #expect(throws: RedisClientError.self) { try await limits.acquire([request], maxWait: .zero) }
            #expect(error?.code == .tlsVerificationFailed)
            #expect(!limits.isDegraded)
            let health = try await RedisHealthCheck(client: client, fallbacks: [limits]).check()
            #expect(health.status == .unhealthy)
            #expect(health.message?.contains("certificate verification") == true)
        }
    }
}
