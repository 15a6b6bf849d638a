import Testing
@testable import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Pub/sub", .timeLimit(.minutes(1)))
struct RedisPubSubTests {
    @Test func messagesArriveOnChannelsAndPatterns() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let subscription = try await client.subscribe(to: ["news"], patterns: ["cache:*"])
            var iterator = subscription.makeAsyncIterator()
            try await client.send("PUBLISH", "news", [UInt8]([0, 1, 2]))
            try await client.send("PUBLISH", "cache:users", "invalidate")
            try await client.send("PUBLISH", "other", "ignored")
            #expect(await iterator.next() == .message(RedisPubSubMessage(channel: "news", pattern: nil, payload: [0, 1, 2])))
            #expect(await iterator.next() == .message(RedisPubSubMessage(channel: "cache:users", pattern: "cache:*", payload: Array("invalidate".utf8))))
        }
    }

    @Test func subscriptionSurvivesClientKill() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let subscription = try await client.subscribe(to: ["events"])
            var iterator = subscription.makeAsyncIterator()
            try await client.send("PUBLISH", "events", "before")
            #expect(await iterator.next() == .message(RedisPubSubMessage(channel: "events", pattern: nil, payload: Array("before".utf8))))

            #expect(try await client.send("CLIENT", "KILL", "TYPE", "pubsub") == .integer(1))
            guard case .connectionLost(let error) = await iterator.next() else {
                Issue.record("expected connectionLost")
                return
            }
            #expect(error.isUnavailable)
            #expect(await iterator.next() == .restored)
            try await client.send("PUBLISH", "events", "after")
            #expect(await iterator.next() == .message(RedisPubSubMessage(channel: "events", pattern: nil, payload: Array("after".utf8))))
        }
    }

    @Test func endingTheIterationUnsubscribes() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            do {
                let subscription = try await client.subscribe(to: ["transient"])
                let numsub = try await client.send("PUBSUB", "NUMSUB", "transient")
                #expect(numsub.array?.last == .integer(1))
                _ = subscription
            }
            var count: Int64? = 1
            for _ in 0..<100 where count != 0 {
                try await Task.sleep(for: .milliseconds(10))
                count = try await client.send("PUBSUB", "NUMSUB", "transient").array?.last?.int
            }
            #expect(count == 0)
        }
    }
}
