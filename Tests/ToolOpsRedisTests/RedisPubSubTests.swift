import Synchronization
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
            try await client.send("PUBLISH", "news", "last")
            #expect(await iterator.next() == .message(RedisPubSubMessage(channel: "news", pattern: nil, payload: [0, 1, 2])))
            #expect(await iterator.next() == .message(RedisPubSubMessage(channel: "cache:users", pattern: "cache:*", payload: Array("invalidate".utf8))))
            // Published in order on one connection: "other" came between, and was not delivered.
            #expect(await iterator.next() == .message(RedisPubSubMessage(channel: "news", pattern: nil, payload: Array("last".utf8))))
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
                try await client.send("PUBLISH", "transient", "one")
                var received: [String] = []
                for await event in subscription {
                    if case .message(let message) = event { received.append(message.text) }
                    break  // ending the iteration (and dropping the subscription) unsubscribes
                }
                #expect(received == ["one"])
            }
            var count: Int64? = 1
            for _ in 0..<100 where count != 0 {
                try await Task.sleep(for: .milliseconds(10))
                count = try await client.send("PUBSUB", "NUMSUB", "transient").array?.last?.int
            }
            #expect(count == 0)
        }
    }

    @Test func handlerSubscriptionsReceiveUntilCancelled() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let received = Mutex<[String]>([])
            let handle = try await client.subscribe(to: ["direct"]) { event in
                if case .message(let message) = event { received.withLock { $0.append(message.text) } }
            }
            try await client.send("PUBLISH", "direct", "a")
            try await client.send("PUBLISH", "direct", "b")
            #expect(await eventually { received.withLock { $0 } == ["a", "b"] })
            handle.cancel()
            #expect(await eventually { (try? await client.send("PUBSUB", "NUMSUB", "direct").array?.last) == .integer(0) })
            // Nothing after the cancel reaches the handler.
            try await client.send("PUBLISH", "direct", "c")
            try await Task.sleep(for: .milliseconds(100))  // observe a fixed window: "never"
            #expect(received.withLock { $0 } == ["a", "b"])
        }
    }
}
