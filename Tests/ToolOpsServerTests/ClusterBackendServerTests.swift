import Foundation
import Testing
import ToolOpsCore
import ToolOpsRedis
import ToolOpsServer
import ToolOpsTestSupport
import ToolOpsTesting

/// The server, unchanged, on a Redis Cluster: two replicas in this process with
/// `state.redis.url = redis-cluster://…` share the cache, a limit and a breaker, and
/// `/cluster`, the dashboard's data and `toolops status` read the whole cluster.
@Suite("The server on a Redis Cluster", .serialized, .timeLimit(.minutes(2)))
struct ClusterBackendServerTests {
    @Test func twoReplicasShareCacheLimitsAndBreakersOnACluster() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            func configure(_ id: String) -> (inout ToolOpsConfiguration) throws -> Void {
                { configuration in
                    configuration.replica.id = id
                    configuration.backend = .redis(.init(url: cluster.url))
                    configuration.policies.cacheEnabled = true
                    configuration.policies.cacheTools = ["demo:compute"]
                    configuration.policies.rateLimitRules = [.init(tools: "demo:echo", rate: 1, per: .seconds(100), burst: 3, key: "tenantAndTool")]
                    configuration.policies.breakerEnabled = true
                    configuration.policies.breakerMinimumCalls = 4
                    configuration.policies.breakerFailureRate = 0.5
                }
            }
            try await withToolServer(configure("replica-a")) { a, _ in
                try await withToolServer(configure("replica-b")) { b, _ in
                    let first = try await http(port: a, "POST", "/v1/tools/demo/compute", body: #"{"n":5000}"#)
                    #expect(try JSONValue(parsing: first.body)["computedBy"] == "replica-a")
                    let hit = try await http(port: b, "POST", "/v1/tools/demo/compute", body: #"{"n":5000}"#)
                    #expect(try JSONValue(parsing: hit.body)["computedBy"] == "replica-a", "served from the cluster by B")

                    // Tenant and tool buckets in different slots: 3 calls for the cluster, then 429.
                    var statuses: [Int] = []
                    for index in 0..<5 {
                        statuses.append(try await http(port: index % 2 == 0 ? a : b, "POST", "/v1/tools/demo/echo", headers: ["X-Tenant-ID": "acme"]).status)
                    }
                    #expect(statuses.filter { $0 == 200 }.count == 3 && statuses.suffix(2) == [429, 429], "\(statuses)")

                    for _ in 0..<4 { _ = try await http(port: a, "POST", "/v1/tools/demo/flaky", body: #"{"fail":true}"#) }
                    let open = await waitFor(seconds: 5) {
                        (try? await http(port: b, "POST", "/v1/tools/demo/flaky", body: #"{"fail":false}"#))?.status == 503
                    }
                    #expect(open != nil, "the breaker tripped through A refuses on B")

                    let replicas = await waitFor(seconds: 5) {
                        ((try? JSONValue(parsing: try await http(port: b, "GET", "/cluster").body))?["count"]) == 2
                    }
                    #expect(replicas != nil)
                    let admin = try RedisClient(url: cluster.url, logger: quietLogger)
                    defer { admin.shutdown() }
                    let status = try await ClusterStatus.read(client: admin)
                    #expect(status.replicas.map(\.id).sorted() == ["replica-a", "replica-b"])
                    #expect(status.breakers.contains { $0.state == "open" })
                    #expect(status.cacheEntries == 1)
                    #expect(try await http(port: a, "GET", "/dashboard/data").status == 200)
                }
            }
        }
    }
}
