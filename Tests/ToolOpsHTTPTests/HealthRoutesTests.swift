import Hummingbird
import HummingbirdTesting
import Testing
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsHealth
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Health HTTP routes", .timeLimit(.minutes(1)))
struct HealthRoutesTests {
    func app(_ routes: HealthRoutes) -> some ApplicationProtocol {
        let router = Router()
        routes.register(on: router)
        return Application(router: router)
    }

    func json(_ response: TestResponse) throws -> JSONValue {
        try JSONValue(parsing: Array(response.body.readableBytesView))
    }

    func text(_ response: TestResponse) -> String { String(buffer: response.body) }

    @Test func probesAnswerWithTheRightStatusCodes() async throws {
        let dependency = SwitchCheck(.healthy("fine"))
        let health = try HealthMonitor()
        try health.register("dep", dependency)
        try await app(HealthRoutes(health: health)).test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .ok)
                #expect(text(response) == "ok\n")
            }
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .ok)
                #expect(text(response) == "ready\n")
                #expect(response.headers[.cacheControl] == "no-store")
            }
            dependency.set(.degraded("slow"))
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .ok)  // degraded is ready by default
                #expect(text(response) == "ready: degraded\n")
            }
            dependency.set(.unhealthy("down"))
            try await client.execute(uri: "/readyz", method: .get) { #expect($0.status == .serviceUnavailable) }
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }  // liveness ignores checks
            dependency.set(.healthy())
            health.beginShutdown()
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(text(response) == "not ready: shutting down\n")
            }
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
        }
    }

    @Test func detailedReportShape() async throws {
        let health = try HealthMonitor()
        let dependency = SwitchCheck(
            HealthCheckResult(status: .degraded, message: "on fallback", details: ["stores": ["rate-limit"]], error: "ECONNREFUSED"))
        try health.register("redis", dependency, options: .init(critical: false))
        try health.register("memory", SwitchCheck(.healthy()))
        try await app(HealthRoutes(health: health)).test(.router) { client in
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json")
                let body = try json(response)
                #expect(body["status"] == "degraded")
                #expect(body["shuttingDown"] == false)
                #expect(body["timestamp"]?.stringValue?.hasSuffix("Z") == true)
                let redis = try #require(body["checks"]?["redis"])
                #expect(redis["status"] == "degraded")
                #expect(redis["critical"] == false)
                #expect(redis["message"] == "on fallback")
                #expect(redis["error"] == "ECONNREFUSED")
                #expect(redis["details"] == ["stores": ["rate-limit"]])
                #expect(redis["durationMs"]?.doubleValue != nil)
                #expect(body["checks"]?["memory"]?["status"] == "healthy")
                #expect(body["checks"]?["memory"]?["message"] == nil)  // absent, not null
            }
            try await client.execute(uri: "/health/redis", method: .get) { response in
                #expect(response.status == .ok)
                let body = try json(response)
                #expect(body["name"] == "redis")
                #expect(body["status"] == "degraded")
            }
            dependency.set(.unhealthy("gone"))
            try await client.execute(uri: "/health/redis", method: .get) { #expect($0.status == .serviceUnavailable) }
            // A failing non-critical check makes the replica degraded, still 200.
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .ok)
                let body = try json(response)
                #expect(body["status"] == "degraded")
            }
            try await client.execute(uri: "/health/nope", method: .get) { response in
                #expect(response.status == .notFound)
                let body = try json(response)
                #expect(body["checks"] == ["redis", "memory"])
                #expect(body["error"]?.stringValue?.contains("nope") == true)
            }
        }
    }

    @Test func unhealthyReportIs503() async throws {
        let health = try HealthMonitor()
        try health.register("db", SwitchCheck(.unhealthy("down")))
        try await app(HealthRoutes(health: health)).test(.router) { client in
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try json(response)
                #expect(body["status"] == "unhealthy")
            }
        }
    }

    @Test func clusterViewListsLiveReplicas() async throws {
        let health = try HealthMonitor()
        let clock = ManualClock()
        let store = MemoryMembershipStore(clock: clock)
        var b = try replica("b", port: 8081)
        b.health = .degraded
        b.checks = ["redis": .degraded]
        try await store.register(try replica("a"), ttl: .seconds(15))
        try await store.register(b, ttl: .seconds(15))
        try await store.register(try replica("c"), ttl: .seconds(1))
        clock.advance(by: .seconds(2))  // c stopped heartbeating
        try await app(HealthRoutes(health: health, membership: store, replicaID: "a")).test(.router) { client in
            for uri in ["/health?scope=cluster", "/cluster"] {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .ok)
                    let body = try json(response)
                    #expect(body["status"] == "degraded")
                    #expect(body["count"] == 2)
                    #expect(body["byStatus"] == ["healthy": 1, "degraded": 1, "unhealthy": 0])
                    guard case .array(let replicas) = body["replicas"] else {
                        Issue.record("no replicas array")
                        return
                    }
                    #expect(replicas.map { $0["id"] } == ["a", "b"])
                    #expect(replicas[0]["self"] == true)
                    #expect(replicas[1]["self"] == false)
                    #expect(replicas[1]["port"] == 8081)
                    #expect(replicas[1]["health"] == "degraded")
                    #expect(replicas[1]["checks"] == ["redis": "degraded"])
                    #expect(replicas[1]["startedAt"] == "2023-11-14T22:13:20.000Z")
                }
            }
        }
    }

    @Test func clusterViewWithoutOrWithABrokenRegistry() async throws {
        struct DownStore: MembershipStore {
            func register(_ replica: ReplicaInfo, ttl: Duration) async throws { throw ToolOpsError(.storeUnavailable, "down") }
            func deregister(id: String) async throws {}
            func members() async throws -> [ReplicaInfo] { throw ToolOpsError(.storeUnavailable, "Redis unavailable") }
        }
        let health = try HealthMonitor()
        try await app(HealthRoutes(health: health)).test(.router) { client in
            try await client.execute(uri: "/cluster", method: .get) { #expect($0.status == .notFound) }
        }
        try await app(HealthRoutes(health: health, membership: DownStore())).test(.router) { client in
            try await client.execute(uri: "/health?scope=cluster", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try json(response)
                #expect(body["error"]?.stringValue?.contains("Redis unavailable") == true)
            }
            // The replica's own probes do not depend on the registry.
            try await client.execute(uri: "/readyz", method: .get) { #expect($0.status == .ok) }
        }
    }
}
