import Logging
import ServiceLifecycle
import Testing
import ToolOpsCache
import ToolOpsCore
import ToolOpsRedis
@testable import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

/// `RedisBackend` as the one service a user runs for every Redis store.
@Suite("Redis backend service", .timeLimit(.minutes(1)))
struct RedisBackendTests {
    let policy = try! CircuitBreakerPolicy(window: .time(.seconds(10)), failureRateThreshold: 0.5, minimumCalls: 2)

    func fastClient(_ url: String) throws -> RedisClient {
        var configuration = try RedisConfiguration(url: url)
        configuration.connectTimeout = .milliseconds(200)
        configuration.commandTimeout = .milliseconds(500)
        configuration.reconnect = ReconnectBackoff(initialDelay: .milliseconds(10), maximumDelay: .milliseconds(50))
        return try RedisClient(configuration: configuration, logger: quietLogger)
    }

    @Test func runningItStartsEveryStoresBackgroundWorkAndShutdownStopsIt() async throws {
        try await withRedisServer { server in
            let backend = RedisBackend(
                client: try fastClient(server.url), configuration: .init(circuitBreaker: .init(flushInterval: .milliseconds(5))),
                logger: quietLogger)
            let breakers = backend.makeCircuitBreakerStore()
            let cache = try backend.makeCacheStore()
            let probe = try RedisClient(url: server.url, logger: quietLogger)
            defer { probe.shutdown() }
            // Not running yet: nothing follows the channels.
            #expect(!cache.isNearCacheActive)
            #expect(try await probe.send("PUBSUB", "NUMSUB", backend.keys.cacheEvents, backend.keys.circuitBreakerEvents)
                == .array([.bulkString(Array(backend.keys.cacheEvents.utf8)), .integer(0),
                           .bulkString(Array(backend.keys.circuitBreakerEvents.utf8)), .integer(0)]))

            let group = ServiceGroup(configuration: .init(services: [backend], logger: quietLogger))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                #expect(await eventually { cache.isNearCacheActive && breakers.isFollowingTransitions })
                // A store made while it runs is run at once.
                let late = try backend.makeCacheStore()
                #expect(await eventually { late.isNearCacheActive })

                // Outcomes are flushed in the background: the breaker opens without a flush call.
                for _ in 0..<2 {
                    _ = try await breakers.record(key: "svc", outcome: .failure(duration: .milliseconds(1)), probe: false, policy: policy)
                }
                #expect(await eventually { breakers.viewState("svc") == .open })

                // Graceful shutdown: a queued outcome is still sent, the channels are left, the client is closed.
                _ = try await breakers.record(key: "other", outcome: .failure(duration: .milliseconds(1)), probe: false, policy: policy)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            let other = try await probe.send("HGETALL", backend.keys.circuitBreaker("other"))
            #expect(other.array?.isEmpty == false, "the outcome queued at shutdown reached Redis")
            #expect(!cache.isNearCacheActive && !breakers.isFollowingTransitions)
            let error = await #expect(throws: RedisClientError.self) { try await backend.client.send("PING") }
            #expect(error?.code == .clientClosed)
            await #expect(throws: ToolOpsError.self) { try await backend.run() }  // once only
        }
    }

    @Test func startingWhileRedisIsDownSubscribesWhenItComesBack() async throws {
        try await withRedisServer { server in
            server.kill()
            let backend = RedisBackend(client: try fastClient(server.url), logger: quietLogger)
            let cache = try backend.makeCacheStore()
            let group = ServiceGroup(configuration: .init(services: [backend], logger: quietLogger))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                try await Task.sleep(for: .milliseconds(200))
                #expect(!cache.isNearCacheActive)  // still trying, and the service did not fail
                try server.start()
                #expect(await eventually { cache.isNearCacheActive })
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
    }

    @Test func aStoreNotRunByABackendSendsOutcomesAtOnce() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let store = RedisCircuitBreakerStore(client: client)
            _ = try await store.record(key: "svc", outcome: .failure(duration: .milliseconds(1)), probe: false, policy: policy)
            let hash = try await client.send("HGETALL", RedisKeySchema().circuitBreaker("svc"))
            #expect(hash.array?.isEmpty == false)
        }
    }
}
