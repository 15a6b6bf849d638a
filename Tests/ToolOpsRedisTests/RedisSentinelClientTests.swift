import Foundation
import Synchronization
import Testing
import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

/// The client through real sentinels: it finds the master, and after the master is killed it
/// follows the promotion without being told.
@Suite("The client through Redis Sentinel", .serialized, .timeLimit(.minutes(2)))
struct RedisSentinelClientTests {
    @Test func theClientFindsTheMasterAndFollowsAFailover() async throws {
        try await withRedisSentinel { group in
            let client = try makeClient(group.url) { $0.reconnect = .init(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(200)) }
            defer { client.shutdown() }
            try await client.send("SET", "greeting", "hello")
            #expect(try await client.masters() == [.tcp(host: "127.0.0.1", port: group.master.port)])
            let received = Mutex<[String]>([])
            let handle = try await client.subscribe(to: ["news"]) { event in
                if case .message(let message) = event { received.withLock { $0.append(message.text) } }
            }
            defer { handle.cancel() }
            // Wait until the replica has the write, so the promoted one still holds it.
            let replica = try makeClient("redis://127.0.0.1:\(group.replica.port)")
            defer { replica.shutdown() }
            #expect(await eventually { (try? await replica.send("GET", "greeting").string) == "hello" })

            group.master.kill()
            let killed = ContinuousClock.now
            var failures = 0
            var recovered: Duration? = nil
            while ContinuousClock.now - killed < .seconds(20) {
                do {
                    try await client.send("INCR", "after")
                    recovered = ContinuousClock.now - killed
                    break
                } catch let error as RedisClientError {
                    #expect(error.isUnavailable, "\(error)")
                    failures += 1
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            let took = try #require(recovered, "the client never reached the promoted replica")
            #expect(took < .seconds(10))
            #expect(try await client.masters() == [.tcp(host: "127.0.0.1", port: group.replica.port)])
            #expect(try await client.send("GET", "greeting").string == "hello", "the data the replica had")
            #expect(try await replica.send("GET", "after").int == 1, "written on the promoted replica")

            // Pub/sub follows too: the subscription is restored on the new master.
            let delivered = await eventually(within: .seconds(15)) {
                _ = try? await client.send("PUBLISH", "news", "after failover")
                try? await Task.sleep(for: .milliseconds(50))
                return received.withLock { $0.contains("after failover") }
            }
            #expect(delivered)
        }
    }

    @Test func unknownMasterNamesAndDeadSentinelsAreClearErrors() async throws {
        try await withRedisSentinel { group in
            let wrong = try makeClient(group.url.replacingOccurrences(of: "/mymaster", with: "/nosuch"))
            defer { wrong.shutdown() }
            do {
                try await wrong.send("PING")
                Issue.record("PING reached a master no sentinel knows")
            } catch let error as RedisClientError {
                #expect(error.message.contains("no sentinel knows a master named 'nosuch'"), "\(error)")
            }
            let dead = try makeClient("redis-sentinel://127.0.0.1:\(try RedisServer.freePort())/mymaster") { $0.unavailableRetryBudget = .zero }
            defer { dead.shutdown() }
            await #expect(throws: RedisClientError.self) { try await dead.send("PING") }
        }
    }
}
