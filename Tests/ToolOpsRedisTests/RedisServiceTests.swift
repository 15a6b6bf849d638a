import Logging
import ServiceLifecycle
import Testing
@testable import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Redis client as a ServiceLifecycle service", .timeLimit(.minutes(1)))
struct RedisServiceTests {
    @Test func gracefulShutdownClosesTheClient() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            let group = ServiceGroup(services: [client], logger: quietLogger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                #expect(try await client.send("PING") == .simpleString("PONG"))
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            let error = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
            #expect(error?.code == .clientClosed)
            // Its connection is gone from the server.
            let probe = try RedisClient(url: server.url, logger: quietLogger)
            defer { probe.shutdown() }
            var names: [Substring] = []
            for _ in 0..<50 {
                let list = try await probe.send("CLIENT", "LIST").string ?? ""
                names = list.split(separator: "\n").filter { $0.contains("name=toolops") }
                if names.count == 1 { break }  // just the probe
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(names.count == 1)
        }
    }
}
