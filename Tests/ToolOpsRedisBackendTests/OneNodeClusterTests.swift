import Foundation
import Testing
import ToolOpsCore
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

/// Stores against a real Redis Cluster node that owns every slot: no routing is needed, but the
/// node refuses a command or script whose keys span slots (`CROSSSLOT`), as every cluster does.
/// The first step of issue 19: the stores whose scripts keep to one slot work here unchanged.
@Suite("Stores on a one-node Redis Cluster", .timeLimit(.minutes(1)))
struct OneNodeClusterTests {
    /// A cluster-enabled redis-server holding all 16,384 slots.
    func withOneNodeCluster(_ body: (RedisServer) async throws -> Void) async throws {
        let nodes = NSTemporaryDirectory() + "toolops-cluster-\(UUID().uuidString).conf"
        defer { try? FileManager.default.removeItem(atPath: nodes) }
        try await withRedisServer(.init(extraArguments: ["--cluster-enabled", "yes", "--cluster-config-file", nodes, "--cluster-port", "\(try RedisServer.freePort())"])) { server in
            let admin = try RedisClient(url: server.url, logger: quietLogger)
            defer { admin.shutdown() }
            try await admin.send("CLUSTER", "ADDSLOTSRANGE", 0, 16_383)
            let ready = await eventually(within: .seconds(10)) {
                let info = (try? await admin.send("CLUSTER", "INFO").string) ?? ""
                return info.contains("cluster_state:ok")
            }
            try #require(ready, "the one-node cluster did not become ready")
            // The node refuses keys of two slots: what every test below must not meet.
            await #expect(throws: RedisClientError.self) { try await admin.send("MGET", "a", "b") }
            try await body(server)
        }
    }

    @Test func theBreakerStoreWorksOnAClusterNode() async throws {
        try await withOneNodeCluster { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let store = RedisCircuitBreakerStore(client: client, configuration: .init(flushInterval: .milliseconds(5), replicaID: "r1"))
            try await store.start()
            let policy = try CircuitBreakerPolicy(window: .time(.seconds(10)), failureRateThreshold: 0.5, minimumCalls: 4, openDuration: .seconds(5))
            #expect(try await store.admit(key: "svc", policy: policy).allowed)
            for _ in 0..<4 { _ = try await store.record(key: "svc", outcome: .failure(duration: .milliseconds(1)), probe: false, policy: policy) }
            await store.flush()
            #expect(try await store.snapshot(key: "svc", policy: policy).state == .open, "recorded, evaluated and published on the node")
            #expect(try await store.admit(key: "svc", policy: policy).allowed == false)
        }
    }

    @Test func bulkheadRateLimitAndMembershipStoresWorkOnAClusterNode() async throws {
        try await withOneNodeCluster { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let bulkhead = RedisBulkheadStore(client: client)
            let permit = try await bulkhead.acquire(key: "db", limit: 1, lease: .seconds(30), maxWait: .zero)
            await #expect(throws: ToolOpsError.self) { _ = try await bulkhead.acquire(key: "db", limit: 1, lease: .seconds(30), maxWait: .zero) }
            await bulkhead.release(permit)
            #expect(try await eventually { (try? await bulkhead.acquire(key: "db", limit: 1, lease: .seconds(30), maxWait: .milliseconds(100))) != nil })

            let limits = RedisRateLimitStore(client: client)
            let limit = try RateLimit(rate: 1, per: .seconds(100), burst: 2)
            let decisions = try await (0..<3).asyncMap { _ in try await limits.acquire([RateLimitRequest(key: "tool", limit: limit)], maxWait: .zero)[0].allowed }
            #expect(decisions == [true, true, false])

            let membership = RedisMembershipStore(client: client)
            try await membership.register(try ReplicaInfo(id: "r1", host: "127.0.0.1", port: 8080, version: "1"), ttl: .seconds(10))
            #expect(try await membership.members().map(\.id) == ["r1"])
        }
    }
}

extension OneNodeClusterTests {
    /// A call subject to two limits whose buckets lie in two slots: one script per slot, and a
    /// refusal in one slot refunds the other — all or nothing, as on one server.
    @Test func limitsInSeveralSlotsAreDecidedPerSlotAllOrNothing() async throws {
        try await withOneNodeCluster { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let tool = RateLimitRequest(key: "tool:search", limit: try RateLimit(rate: 1, per: .seconds(100), burst: 2))
            let tenant = RateLimitRequest(key: "tenant:acme", limit: try RateLimit(rate: 1, per: .seconds(100), burst: 1))
            #expect(RedisSlot(key: RedisKeySchema().rateLimit(tool.key)) != RedisSlot(key: RedisKeySchema().rateLimit(tenant.key)))
            // One script over both: the cluster refuses it.
            await #expect(throws: RedisClientError.self) {
                _ = try await RedisRateLimitStore(client: client, slotMode: .singleScript).acquire([tool, tenant], maxWait: .zero)
            }
            let store = RedisRateLimitStore(client: client, leasing: .off, slotMode: .perSlot)
            let first = try await store.acquire([tool, tenant], maxWait: .zero)
            #expect(first.allSatisfy(\.allowed) && first[0].remaining == 1 && first[1].remaining == 0)
            // The tenant is out: the call is refused, and the token its tool bucket reserved is refunded.
            let second = try await store.acquire([tool, tenant], maxWait: .zero)
            #expect(second.allSatisfy { !$0.allowed } && second.allSatisfy { $0.retryAfter > .seconds(90) })
            let alone = try await store.acquire([tool], maxWait: .zero)
            #expect(alone[0].allowed && alone[0].remaining == 0, "the tool bucket still had its second token")
            #expect(try await store.acquire([tool], maxWait: .zero)[0].allowed == false)
        }
    }
}

extension Range where Bound == Int {
    func asyncMap<T>(_ transform: (Int) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for index in self { out.append(try await transform(index)) }
        return out
    }
}
