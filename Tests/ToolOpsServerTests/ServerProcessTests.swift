import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Testing
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("toolops serve processes and the README's server example", .timeLimit(.minutes(1)))
struct ServerProcessTests {
    func ids(_ store: RedisMembershipStore) async -> [String]? { try? await store.members().map(\.id) }

    @Test func serversInSeparateProcessesFormOneCluster() async throws {
        let binary = try #require(toolopsBinary(), "the toolops executable must be built next to the tests")
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let store = RedisMembershipStore(client: client)
            let ports = try (0..<3).map { _ in try RedisServer.freePort() }
            let processes = try ports.enumerated().map { index, port in
                try startServer(binary, ["--port", "\(port)", "--redis", server.url, "--replica-id", "replica-\(index)"])
            }
            defer { processes.forEach { if $0.isRunning { kill($0.processIdentifier, SIGKILL) } } }
            let all = ["replica-0", "replica-1", "replica-2"]
            #expect(await waitFor(seconds: 20) { await ids(store) == all } != nil, "the three servers registered")

            // Each server's own view of the cluster, over HTTP.
            let port = ports[1]
            #expect(await waitFor(seconds: 5) { (try? httpGet(port: port, "/cluster"))?.status == 200 } != nil)
            let (status, body) = try httpGet(port: ports[1], "/cluster")
            #expect(status == 200)
            let json = try JSONValue(parsing: body)
            #expect(json["count"] == 3)
            guard case .array(let replicas) = json["replicas"] else { throw TestFailure("no replicas in \(body)") }
            #expect(replicas.map { $0["id"] } == ["replica-0", "replica-1", "replica-2"])
            #expect(replicas.map { $0["self"] } == [false, true, false])
            #expect(try httpGet(port: ports[0], "/readyz").status == 200)
            let health = try JSONValue(parsing: try httpGet(port: ports[0], "/health").body)
            #expect(health["checks"]?["redis"]?["status"] == "healthy")

            // SIGKILL: no deregistration, gone within the TTL (1 s) plus a heartbeat or so.
            kill(processes[2].processIdentifier, SIGKILL)
            let killed = await waitFor(seconds: 5) { await ids(store) == ["replica-0", "replica-1"] }
            // TTL 1 s; the margin is for a loaded machine — a registration that is never pruned fails.
            #expect(try #require(killed) <= .milliseconds(2_500))

            // SIGTERM: graceful shutdown deregisters at once, long before the TTL.
            kill(processes[1].processIdentifier, SIGTERM)
            let left = await waitFor(seconds: 5) { await ids(store) == ["replica-0"] }
            #expect(try #require(left) < .milliseconds(900))
            processes[1].waitUntilExit()
            #expect(processes[1].terminationStatus == 0)
        }
    }

    /// The README's health example, as written there (a free port instead of 8080, no signals).
    @Test func readmeHealthExampleRuns() async throws {
        try await withRedisServer { server in
            let redis = try RedisBackend(url: server.url, logger: quietLogger)
            let logger = quietLogger
            let limits = try redis.makeFallbackRateLimitStore(mode: .local(scale: 1.0 / 3))
            let port = try RedisServer.freePort()

            let health = try HealthMonitor()
            try health.register("memory", try MemoryHealthCheck())
            try health.register("redis", redis.makeHealthCheck(), options: .init(timeout: .seconds(2)))

            let registry = redis.makeMembershipStore()
            let me = try ReplicaInfo(id: "api-7f9c", host: "10.0.3.7", port: port, version: "1.4.0")
            let router = Router()
            HealthRoutes(health: health, membership: registry, replicaID: me.id).register(on: router)
            let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)

            let group = ServiceGroup(
                configuration: .init(
                    services: [
                        redis, app, ReadinessService(health: health, drainDelay: .seconds(10)),
                        try MembershipHeartbeat(replica: me, store: registry, health: health, logger: logger),
                    ], logger: logger))
            let run = Task { try await group.run() }
            #expect(await waitFor(seconds: 10) { (try? httpGet(port: port, "/readyz"))?.status == 200 } != nil)
            #expect(await waitFor(seconds: 5) { await ids(registry) == ["api-7f9c"] } != nil)
            let cluster = try JSONValue(parsing: try httpGet(port: port, "/cluster").body)
            guard case .array(let replicas) = cluster["replicas"] else { throw TestFailure("no replicas: \(cluster)") }
            #expect(replicas.first?["self"] == true)
            #expect(redis.fallbackStores.map(\.name) == [limits.name])  // its probes run with the backend
            await group.triggerGracefulShutdown()
            // Deregistered first, then readiness off while the server still answers (drain delay).
            #expect(await waitFor(seconds: 5) { (try? httpGet(port: port, "/readyz"))?.status == 503 } != nil)
            #expect(try httpGet(port: port, "/healthz").status == 200)
            let probe = try RedisClient(url: server.url, logger: quietLogger)
            defer { probe.shutdown() }
            #expect(await ids(RedisMembershipStore(client: probe)) == [])
            run.cancel()  // skip the rest of the 10 s drain
            _ = await run.result
        }
    }
}

/// Starts `toolops serve` with fast heartbeats (0.2 s, TTL 1 s) and quiet logs.
func startServer(_ binary: String, _ arguments: [String]) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = ["serve", "--heartbeat-interval", "0.2", "--registration-ttl", "1", "--log-level", "error"] + arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    return process
}
