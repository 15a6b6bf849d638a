import ArgumentParser
import Logging
import ToolOpsCore
import ToolOpsRedis

@main
struct ToolOpsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "toolops",
        abstract: "ToolOps: an operations layer for tool execution, with shared state in Redis.",
        version: ToolOps.version,
        subcommands: [Serve.self, MCPCommand.self, Ping.self, Status.self, Keys.self, Audit.self]
    )
}

struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connect to Redis and measure a few PING round trips.")

    @Option(help: "Redis URL: redis://[user:pass@]host:port[/db], rediss://…, unix:///path")
    var redis: String = "redis://127.0.0.1:6379"

    @Option(help: "Number of PINGs.")
    var count: Int = 3

    @Option(help: "CA file for rediss:// URLs.")
    var tlsCA: String?

    func run() async throws {
        var configuration = try RedisConfiguration(url: redis)
        if let tlsCA, configuration.tls.isEnabled { configuration.tls.caFile = tlsCA }
        configuration.connectTimeout = .seconds(3)
        let client = try RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let clock = ContinuousClock()
        for _ in 0..<max(1, count) {
            var reply: RESPValue = .null
            let elapsed = try await clock.measure { reply = try await client.send("PING") }
            let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
            print("\(RedisConfiguration.redact(redis)): \(reply) in \(micros) µs")
        }
    }
}
