import ArgumentParser
import Foundation
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTesting

/// `toolops-bench breaker`: the cost of admitting a call through a closed Redis-backed
/// breaker (local view, no round trip) and the round trips it makes, vs the memory store.
struct BreakerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "breaker",
        abstract: "Closed-breaker admission cost and round trips: Redis store (local view) vs memory store."
    )

    @Option(help: "Admissions per measurement.")
    var admissions: Int = 1_000_000

    func run() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let client = try RedisClient(url: server.url)
        let probe = try RedisClient(url: server.url)
        defer { client.shutdown(); probe.shutdown() }
        let policy = try CircuitBreakerPolicy(window: .time(.seconds(30)))
        let redisStore = RedisCircuitBreakerStore(client: client)
        try await redisStore.start()
        _ = try await redisStore.admit(key: "bench", policy: policy)  // first sight: one round trip
        let memoryStore = MemoryCircuitBreakerStore()
        let fallbackStore = try FallbackCircuitBreakerStore(primary: redisStore)

        say("\(admissions) admissions of one closed breaker, one caller")
        say("")
        say("store".padding(toLength: 28, withPad: " ", startingAt: 0) + "ns/admission  round trips")
        for (name, store) in [
            ("memory", memoryStore as any CircuitBreakerStore), ("redis (local view)", redisStore),
            ("redis + fallback wrapper", fallbackStore),
        ] {
            let before = try await commands(probe)
            let start = ContinuousClock.now
            for _ in 0..<admissions { _ = try await store.admit(key: "bench", policy: policy) }
            let ns = (ContinuousClock.now - start).secondsDouble * 1e9 / Double(admissions)
            let roundTrips = try await commands(probe) - before - 1  // minus the INFO probe itself
            say(name.padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: "%-13.0f", ns) + "\(roundTrips)")
        }
    }

    /// Commands clients have sent so far (those the breaker scripts run inside Redis excluded).
    func commands(_ client: RedisClient) async throws -> Int {
        let scriptInternal: Set = ["time", "hgetall", "hset", "publish", "hdel", "pexpire"]
        return try await client.commandCalls().filter { !scriptInternal.contains($0.key) }.values.reduce(0, +)
    }
}
