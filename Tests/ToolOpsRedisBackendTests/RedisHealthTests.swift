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
            let ttl = Duration.milliseconds(600)
            for (index, store) in stores.enumerated() { try await store.register(try replica("r\(index)"), ttl: ttl) }
            for store in stores { #expect(await ids(store) == ["r0", "r1", "r2"]) }

            // r0 and r1 keep heartbeating; r2 "crashes" (no deregistration).
            let heartbeat = Task {
                while !Task.isCancelled {
                    for index in 0..<2 { try? await stores[index].register(try replica("r\(index)"), ttl: ttl) }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            defer { heartbeat.cancel() }
            let gone = await waitFor(seconds: 3) { await ids(stores[0]) == ["r0", "r1"] }
            let elapsed = try #require(gone, "r2 never expired")
            #expect(elapsed <= ttl + .milliseconds(300))

            // Graceful shutdown removes a replica at once (its heartbeats stopped first, as the
            // heartbeat service does; r0's last beat is < 0.1 s old, well within its TTL).
            heartbeat.cancel()
            _ = await heartbeat.result
            try await stores[1].deregister(id: "r1")
            #expect(await ids(stores[0]) == ["r0"])

            // The registry's keys expire with the last registration.
            let keys = RedisKeySchema()
            #expect(await waitFor(seconds: 3) { (try? await clients[0].send("EXISTS", keys.membersIndex, keys.membersInfo))?.int == 0 } != nil)
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
            // The next beat re-registers; if it lands on the connection the restart broke, one
            // retry (50 ms) follows.
            #expect(elapsed <= interval + .milliseconds(150), "re-registered after \(elapsed)")

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
            let plain = RedisHealthCheck(client: client)
            let withFallback = backend.makeHealthCheck()

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
