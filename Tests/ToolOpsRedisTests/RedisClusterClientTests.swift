import Foundation
import Testing
import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

/// The client against a real local Redis Cluster of three masters (`redis-cli --cluster create`).
@Suite("The client on a Redis Cluster", .serialized, .timeLimit(.minutes(2)))
struct RedisClusterClientTests {
    /// A plain client straight to one node (no routing), to look at what landed where.
    func node(_ port: Int) throws -> RedisClient { try makeClient("redis://127.0.0.1:\(port)") }

    @Test func commandsAndPipelinesReachTheMasterOfTheirSlot() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let client = try makeClient(cluster.url)
            defer { client.shutdown() }
            let keys = (0..<300).map { "key:\($0)" }
            for (index, key) in keys.enumerated() { try await client.send("SET", key, index) }
            // Pipelined over every node, replies back in the order sent.
            let replies = try await client.pipeline(keys.map { RedisCommand("GET", $0) })
            #expect(replies.map { try? $0.get().int } == (0..<300).map { Int64($0) })
            let mixed = try await client.pipeline([RedisCommand("INCR", "n:{a}"), RedisCommand("MGET", "a", "b"), RedisCommand("INCR", "n:{b}")])
            #expect((try? mixed[0].get().int) == 1 && (try? mixed[2].get().int) == 1)
            #expect(throws: RedisClientError.self) { try mixed[1].get() }

            // Each key is stored on the master its slot belongs to, and only there.
            var perNode: [Int: Int] = [:]
            for port in try cluster.masterPorts() {
                let direct = try node(port)
                defer { direct.shutdown() }
                perNode[port] = Int(try await direct.send("DBSIZE").int ?? -1)
            }
            #expect(perNode.count == 3 && perNode.values.allSatisfy { $0 > 50 }, "\(perNode)")
            #expect(perNode.values.reduce(0, +) == 302)
            let owner = try #require(try cluster.masterPort(forKey: "key:7"))
            let direct = try node(owner)
            defer { direct.shutdown() }
            #expect(try await direct.send("GET", "key:7").int == 7)
        }
    }

    @Test func keysOfSeveralSlotsAreRefusedBeforeSending() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let client = try makeClient(cluster.url)
            defer { client.shutdown() }
            do {
                try await client.send("MGET", "a", "b")
                Issue.record("MGET a b was sent")
            } catch let error as RedisClientError {
                #expect(error.code == .crossSlot, "the client's own error, not the server's CROSSSLOT")
                #expect(error.message.contains("a (15495)") && error.message.contains("b (3300)"))
            }
            // Same hash tag: one slot, one command.
            try await client.send("MSET", "{user}:a", "1", "{user}:b", "2")
            #expect(try await client.send("MGET", "{user}:a", "{user}:b").array?.compactMap(\.int) == [1, 2])
        }
    }

    /// A slot moved to another master while the client held the old map: `MOVED` is followed and
    /// remembered; during the migration, `ASK` sends `ASKING` + the command to the importing node.
    @Test func movedAndAskAreFollowedDuringASlotMigration() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let client = try makeClient(cluster.url)
            defer { client.shutdown() }
            try await client.send("SET", "foo", "before")   // the client has read the map
            let slot = RedisSlot(key: "foo").value
            let source = try #require(try cluster.masterPort(forKey: "foo"))
            let target = try #require(try cluster.masterPorts().first { $0 != source })
            func id(_ port: Int) throws -> String {
                try RedisClusterServers.redisCLI(["-p", "\(port)", "CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let (sourceID, targetID) = (try id(source), try id(target))
            try RedisClusterServers.redisCLI(["-p", "\(target)", "CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID])
            try RedisClusterServers.redisCLI(["-p", "\(source)", "CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID])

            // "{foo}new" is in foo's slot and absent on the source: the source answers ASK.
            try await client.send("SET", "{foo}new", "during")
            #expect(try await client.send("GET", "foo").string == "before", "a key still on the source is served there")
            #expect(try await client.send("GET", "{foo}new").string == "during")
            let onTarget = try RedisClusterServers.redisCLI(["-p", "\(target)", "CLUSTER", "COUNTKEYSINSLOT", "\(slot)"])
            #expect(onTarget.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "written on the importing node")

            // Finish the migration: move foo, give the slot to the target everywhere.
            try RedisClusterServers.redisCLI(["-p", "\(source)", "MIGRATE", "127.0.0.1", "\(target)", "", "0", "5000", "KEYS", "foo"])
            for port in try cluster.masterPorts() {
                try RedisClusterServers.redisCLI(["-p", "\(port)", "CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
            }
            let before = try await directCalls(port: target, command: "get")
            #expect(try await client.send("GET", "foo").string == "before", "MOVED followed")
            #expect(try await client.send("GET", "foo").string == "before")
            #expect(try await directCalls(port: target, command: "get") - before == 2)
            let sourceGets = try await directCalls(port: source, command: "get")
            #expect(try await client.send("GET", "{foo}new").string == "during")
            #expect(try await directCalls(port: source, command: "get") == sourceGets, "the map was updated: no more trips to the old owner")
        }
    }

    /// A node dies under a pipeline: its commands fail (unavailable), the others' answers stand,
    /// and the pipeline itself does not throw.
    @Test func aPipelineWithADeadNodeFailsOnlyThatNodesCommands() async throws {
        try await withRedisCluster(masters: 3, nodeTimeout: .seconds(15)) { cluster in
            let client = try makeClient(cluster.url) {
                $0.unavailableRetryBudget = .milliseconds(100)
                $0.connectTimeout = .milliseconds(200)
            }
            defer { client.shutdown() }
            let keys = (0..<24).map { "key:\($0)" }
            for key in keys { try await client.send("SET", key, key) }
            var owners: [String: Int] = [:]
            for key in keys { owners[key] = try cluster.masterPort(forKey: key) }
            let victim = try #require(owners["key:0"])
            cluster.server(port: victim)?.kill()
            let results = try await client.pipeline(keys.map { RedisCommand("GET", $0) })
            for (key, result) in zip(keys, results) {
                switch result {
                case .success(let value):
                    #expect(owners[key] != victim && value.string == key, "\(key)")
                case .failure(let error):
                    #expect(owners[key] == victim && error.isUnavailable, "\(key): \(error)")
                }
            }
            #expect(owners.values.contains { $0 != victim })
        }
    }

    func directCalls(port: Int, command: String) async throws -> Int {
        let direct = try node(port)
        defer { direct.shutdown() }
        return try await direct.commandCalls()[command] ?? 0
    }

    /// Scripts are cached per node (and never replicated): each node loads them on `NOSCRIPT`.
    @Test func scriptsAreLoadedOnEachNodeAfterAFlush() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let client = try makeClient(cluster.url)
            defer { client.shutdown() }
            let script = RedisScript("return redis.call('INCR', KEYS[1])")
            let keys = (0..<30).map { "counter:\($0)" }
            for key in keys { #expect(try await client.run(script, keys: [key]).int == 1) }
            for port in try cluster.masterPorts() { try RedisClusterServers.redisCLI(["-p", "\(port)", "SCRIPT", "FLUSH"]) }
            for key in keys { #expect(try await client.run(script, keys: [key]).int == 2) }
            let replies = try await client.pipeline(keys.map { RedisCommand.evalSHA(script, keys: [$0]) })
            #expect(replies.allSatisfy { (try? $0.get().int) == 3 })
        }
    }

    /// A cluster forwards every message to every node: subscribed on one node, published through another.
    @Test func pubSubWorksAcrossNodes() async throws {
        try await withRedisCluster(masters: 3) { cluster in
            let client = try makeClient(cluster.url)
            defer { client.shutdown() }
            let subscription = try await client.subscribe(to: ["news"])
            var iterator = subscription.makeAsyncIterator()
            for port in try cluster.masterPorts() {
                let direct = try node(port)
                defer { direct.shutdown() }
                try await direct.send("PUBLISH", "news", "from \(port)")
            }
            var received: [String] = []
            while received.count < 3, let event = await iterator.next() {
                if case .message(let message) = event { received.append(message.text) }
            }
            #expect(Set(received).count == 3)
        }
    }
}
