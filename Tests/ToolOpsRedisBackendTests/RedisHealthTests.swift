import Foundation
import Logging
import ServiceLifecycle
import Testing
import ToolOpsCore
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Redis replica registry and health", .timeLimit(.minutes(1)))
struct RedisHealthTests {
    func replica(_ id: String) throws -> ReplicaInfo {
        try ReplicaInfo(id: id, host: "127.0.0.1", port: 8080, version: "test")
    }

    func ids(_ store: RedisMembershipStore) async -> [String]? { try? await store.members().map(\.id) }

    @Test func threeReplicasSeeEachOtherAndADeadOneExpires() async throws {
        try await withRedisServer { server in
            let clients = try (0..<3).map { _ in try RedisClient(url: server.url, logger: quietLogger) }
            defer { clients.forEach { $0.shutdown() } }
            let stores = clients.map { RedisMembershipStore(client: $0) }
            // Long registrations first: the three see each other however slow the machine is.
            for (index, store) in stores.enumerated() { try await store.register(try replica("r\(index)"), ttl: .seconds(30)) }
            for store in stores { #expect(await ids(store) == ["r0", "r1", "r2"]) }

            // r0 and r1 keep heartbeating; r2's last heartbeat has a 600 ms TTL and then it
            // "crashes" (no deregistration).
            let ttl = Duration.milliseconds(600)
            let heartbeat = Task {
                while !Task.isCancelled {
                    for index in 0..<2 { try? await stores[index].register(try replica("r\(index)"), ttl: .seconds(30)) }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            defer { heartbeat.cancel() }
            let registering = ContinuousClock.now  // the registration (and its TTL) starts after this
            try await stores[2].register(try replica("r2"), ttl: ttl)
            let gone = await waitFor(seconds: 5) { await ids(stores[0]) == ["r0", "r1"] }
            _ = try #require(gone, "r2 never expired")
            let elapsed = ContinuousClock.now - registering
            // Not before its TTL (Redis time, whole milliseconds: the expiry is truncated to the
            // millisecond, so it may fall up to 1 ms before our clock's reading).
            #expect(elapsed >= ttl - .milliseconds(2))
            #expect(elapsed <= ttl + .seconds(1))  // pruned when read, not left until the key expires

            // Graceful shutdown removes a replica at once (its heartbeats stopped first, as the
            // heartbeat service does).
            heartbeat.cancel()
            _ = await heartbeat.result
            try await stores[1].deregister(id: "r1")
            #expect(await ids(stores[0]) == ["r0"])

            // The registry's keys expire with the last registration.
            try await stores[0].register(try replica("r0"), ttl: ttl)
            let keys = RedisKeySchema()
            #expect(await waitFor(seconds: 5) { (try? await clients[0].send("EXISTS", keys.membersIndex, keys.membersInfo))?.int == 0 } != nil)
        }
    }

    @Test func replicasReRegisterWithinOneHeartbeatAfterARedisRestart() async throws {
        try await withRedisServer { server in
            var configuration = try RedisConfiguration(url: server.url)
            configuration.reconnect = .init(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
            configuration.connectTimeout = .milliseconds(200)
            configuration.commandTimeout = .milliseconds(200)
            let clients = try (0..<3).map { _ in try RedisClient(configuration: configuration, logger: quietLogger) }
            defer { clients.forEach { $0.shutdown() } }
            let interval = Duration.milliseconds(500)
            let heartbeats: [any Service] = try clients.enumerated().map { index, client in
                try MembershipHeartbeat(
                    replica: try replica("r\(index)"), store: RedisMembershipStore(client: client),
                    configuration: .init(interval: interval, ttl: .seconds(3), retryInterval: .milliseconds(50)), logger: quietLogger)
            }
            let group = ServiceGroup(configuration: .init(services: heartbeats, logger: quietLogger))
            async let run: Void = group.run()
            let observer = RedisMembershipStore(client: clients[0])
            #expect(await waitFor(seconds: 5) { await ids(observer) == ["r0", "r1", "r2"] } != nil)

            server.kill()  // no persistence: the registry is gone with it
            try server.start()
            let back = await waitFor(seconds: 5) { await ids(observer) == ["r0", "r1", "r2"] }
            let elapsed = try #require(back, "replicas did not re-register")
            // The next beat re-registers (if it lands on the connection the restart broke, one
            // retry 50 ms later): within about one interval serially; three leave room for the
            // suite running in parallel — and are still well below the TTL (3 s).
            #expect(elapsed <= interval * 3, "re-registered after \(elapsed)")

            await group.triggerGracefulShutdown()
            try await run
            #expect(await ids(observer) == [])  // every heartbeat deregistered on shutdown
        }
    }

    @Test func redisCheckReportsPingAndFallbackState() async throws {
        try await withRedisServer { server in
            var configuration = try RedisConfiguration(url: server.url)
            configuration.connectTimeout = .milliseconds(200)
            configuration.commandTimeout = .milliseconds(200)
            configuration.reconnect = .init(initialDelay: .milliseconds(10), maximumDelay: .milliseconds(50))
            let client = try RedisClient(configuration: configuration, logger: quietLogger)
            defer { client.shutdown() }
            let backend = RedisBackend(client: client, configuration: .init(probeInterval: .milliseconds(50)), logger: quietLogger)
            let limits = try backend.makeFallbackRateLimitStore()
            let plain = RedisHealthCheck(client: client, configuration: .init(slowThreshold: .seconds(10)))
            // Only the fallback state is under test: a PING slowed by a loaded machine must not
            // turn the answer "degraded" for another reason.
            let withFallback = backend.makeHealthCheck(configuration: .init(slowThreshold: .seconds(10)))

            var result = try await plain.check()
            #expect(result.status == .healthy)
            #expect(result.details["pingMs"]?.doubleValue != nil)

            server.kill()
            result = try await plain.check()
            #expect(result.status == .unhealthy)  // nothing to fall back on
            #expect(result.error != nil)
            #expect(try await withFallback.check().status == .degraded)  // still serving, locally

            // A decision while Redis is down puts the limiter on its fallback…
            let decision = try await limits.acquire([RateLimitRequest(key: "k", limit: try RateLimit(rate: 10))], maxWait: .zero)
            #expect(decision.first?.allowed == true)
            #expect(limits.isDegraded)
            try server.start()
            // …and Redis answering again is not enough: degraded until the limiter is back on it.
            #expect(await waitFor(seconds: 3) { (try? await client.send("PING")) != nil } != nil)
            result = try await withFallback.check()
            #expect(result.status == .degraded)
            #expect(result.details["fallback"] == ["rate-limit": "local(scale: 1.0)"])
            // The probes, run by the backend as a service, switch it back.
            let group = ServiceGroup(configuration: .init(services: [backend], logger: quietLogger))
            async let probes: Void = group.run()
            #expect(await waitFor(seconds: 3) { !limits.isDegraded } != nil)
            #expect(try await withFallback.check().status == .healthy)
            await group.triggerGracefulShutdown()
            try await probes
        }
    }
}
