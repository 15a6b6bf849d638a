import Testing
@testable import ToolOpsRedis

/// The cluster client's pure parts: which slot a command goes to, the slot map read from
/// `CLUSTER SLOTS`, and redirections — without a server.
@Suite("Cluster routing without a server")
struct ClusterRoutingTests {
    func slot(_ key: String) -> Int { RedisSlot(key: key).value }

    @Test func commandsGoToTheSlotOfTheirKeys() {
        #expect(RedisCommand("GET", "foo").routing == .slot(12182))
        #expect(RedisCommand("SET", "foo", "bar", "PX", 10).routing == .slot(12182))
        #expect(RedisCommand("MSET", "{t}a", "1", "{t}b", "2").routing == .slot(slot("{t}a")), "keys at even positions only")
        #expect(RedisCommand("DEL", "{t}a", "{t}b").routing == .slot(slot("t")))
        #expect(RedisCommand("MEMORY", "USAGE", "foo").routing == .slot(12182))
        #expect(RedisCommand("XREAD", "COUNT", "1", "STREAMS", "foo", "0").routing == .slot(12182))
        #expect(RedisCommand.evalSHA(RedisScript("return 1"), keys: ["foo"], arguments: ["a", "b"]).routing == .slot(12182))
        #expect(RedisCommand("PING").routing == .anyNode)
        #expect(RedisCommand("PUBLISH", "channel", "message").routing == .anyNode)
        #expect(RedisCommand("EVAL", "return 1", "0", "foo").routing == .anyNode, "no declared key: arguments are not keys")
    }

    @Test func keysInSeveralSlotsAreRefusedWithTheirNames() {
        guard case .crossSlot(let message) = RedisCommand("MGET", "a", "b").routing else {
            Issue.record("MGET a b should span two slots")
            return
        }
        #expect(message.contains("a (15495)") && message.contains("b (3300)"))
        guard case .crossSlot = RedisCommand.evalSHA(RedisScript("return 1"), keys: ["a", "b"]).routing else {
            Issue.record("a script over two slots should be refused")
            return
        }
    }

    @Test func theSlotMapFollowsClusterSlotsAndMoved() throws {
        func node(_ port: Int64) -> RESPValue { .array([.bulkString(Array("127.0.0.1".utf8)), .integer(port), .bulkString(Array("id".utf8)), .array([])]) }
        let reply = RESPValue.array([
            .array([.integer(5461), .integer(10922), node(7001), node(7004)]),
            .array([.integer(0), .integer(5460), node(7000), node(7003)]),
            .array([.integer(10923), .integer(16383), .array([.bulkString([]), .integer(7002)])]),
        ])
        var map = try RedisClusterTopology(clusterSlots: reply, queried: .tcp(host: "10.0.0.9", port: 7002))
        #expect(map.master(forSlot: 0) == .tcp(host: "127.0.0.1", port: 7000))
        #expect(map.master(forSlot: 5461) == .tcp(host: "127.0.0.1", port: 7001))
        #expect(map.master(forSlot: 16383) == .tcp(host: "10.0.0.9", port: 7002), "an empty ip is the node asked")
        #expect(map.coversAllSlots)
        #expect(map.replicas.count == 2)
        map.moved(slot: 0, to: .tcp(host: "127.0.0.1", port: 7003))
        #expect(map.master(forSlot: 0) == .tcp(host: "127.0.0.1", port: 7003))
        #expect(map.master(forSlot: 1) == .tcp(host: "127.0.0.1", port: 7000), "only the slot named moves")
        #expect(!map.replicas.contains(.tcp(host: "127.0.0.1", port: 7003)), "a promoted replica is a master now")

        let partial = try RedisClusterTopology(clusterSlots: .array([.array([.integer(0), .integer(10), node(7000)])]), queried: .tcp(host: "h", port: 1))
        #expect(!partial.coversAllSlots && partial.master(forSlot: 11) == nil)
        #expect(throws: RedisClientError.self) { try RedisClusterTopology(clusterSlots: .array([.array([.integer(9), .integer(20_000), node(1)])]), queried: .tcp(host: "h", port: 1)) }
        #expect(throws: RedisClientError.self) { try RedisClusterTopology(clusterSlots: .integer(1), queried: .tcp(host: "h", port: 1)) }
    }

    @Test func redirectionsNameTheSlotAndNode() {
        let from = RedisConfiguration.Endpoint.tcp(host: "10.1.1.1", port: 7000)
        #expect(RedisRedirection("MOVED 3999 127.0.0.1:6381", from: from) == .init(kind: .moved, slot: 3999, endpoint: .tcp(host: "127.0.0.1", port: 6381)))
        #expect(RedisRedirection("ASK 12182 127.0.0.1:44244", from: from)?.kind == .ask)
        #expect(RedisRedirection("MOVED 1 :6380", from: from)?.endpoint == .tcp(host: "10.1.1.1", port: 6380))
        #expect(RedisRedirection("MOVED 1 [::1]:6380", from: from)?.endpoint == .tcp(host: "::1", port: 6380))
        #expect(RedisRedirection("MOVED 99999 h:1", from: from) == nil)
        #expect(RedisRedirection("ERR MOVED", from: from) == nil)
        #expect(RedisRedirection("MOVED 1 h:0", from: from) == nil)
    }

    @Test func clusterAndSentinelURLsParse() throws {
        let cluster = try RedisConfiguration(url: "redis-cluster://app:s3cret@10.0.0.1:7000,10.0.0.2,[::1]:7002")
        #expect(cluster.topology == .cluster(seeds: [.tcp(host: "10.0.0.1", port: 7000), .tcp(host: "10.0.0.2", port: 6379), .tcp(host: "::1", port: 7002)]))
        #expect(cluster.password == "s3cret" && cluster.username == "app")
        #expect(!cluster.description.contains("s3cret"))
        #expect(try RedisConfiguration(url: "rediss-cluster://h:1").tls.isEnabled)

        let sentinel = try RedisConfiguration(url: "redis-sentinel://:pw@s1,s2:26380/mymaster/2")
        #expect(sentinel.topology == .sentinel(masterName: "mymaster", sentinels: [.tcp(host: "s1", port: 26379), .tcp(host: "s2", port: 26380)]))
        #expect(sentinel.database == 2 && sentinel.password == "pw")

        for bad in ["redis-cluster://h:1/3", "redis-sentinel://s1:26379", "redis://a:1,b:2", "redis-cluster://", "redis-sentinel://s/"] {
            #expect(throws: RedisClientError.self, "\(bad)") { try RedisConfiguration(url: bad) }
        }
    }
}

extension ClusterRoutingTests {
    /// Commands whose keys are not simply "the first argument" or "every argument".
    @Test func keyPositionsFollowEachCommandsSyntax() {
        #expect(RedisCommand("SMOVE", "{s}a", "{s}b", "member").routing == .slot(slot("s")), "the member is not a key")
        #expect(RedisCommand("LMOVE", "{l}a", "{l}b", "LEFT", "RIGHT").routing == .slot(slot("l")))
        #expect(RedisCommand("BITOP", "AND", "{b}dest", "{b}x", "{b}y").routing == .slot(slot("b")), "the operation is not a key")
        #expect(RedisCommand("ZUNIONSTORE", "{z}dest", "2", "{z}a", "{z}b", "WEIGHTS", "1", "2").routing == .slot(slot("z")))
        #expect(RedisCommand("ZUNION", "2", "{z}a", "{z}b", "WITHSCORES").routing == .slot(slot("z")))
        #expect(RedisCommand("BLMPOP", "0", "2", "{l}a", "{l}b", "LEFT").routing == .slot(slot("l")))
        #expect(RedisCommand("XGROUP", "CREATE", "foo", "group", "$").routing == .slot(12182))
        guard case .crossSlot = RedisCommand("ZUNIONSTORE", "dest", "1", "other").routing else {
            Issue.record("the destination is a key too")
            return
        }
    }

    /// A key count beyond the arguments (hostile or mistaken) neither traps nor invents keys.
    @Test func hugeKeyCountsAreBoundedByTheArguments() {
        #expect(RedisCommand("EVAL", "return 1", "\(Int.max)", "foo").routing == .slot(12182))
        #expect(RedisCommand("EVALSHA", "abc", "99999999999999999999", "foo").routing == .anyNode, "not a number: no keys")
        #expect(RedisCommand("ZUNION", "\(Int.max)").routing == .anyNode)
    }
}
