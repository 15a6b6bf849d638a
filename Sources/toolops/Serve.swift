import ArgumentParser
import Logging
import ToolOpsServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the ToolOps server: health probes and the replica registry (in memory unless --redis is given).")

    @Option(help: "Address to listen on (0.0.0.0 in a container).")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on.")
    var port: Int = 8080

    @Option(help: "Redis URL for shared state and the cluster registry; without it everything is in memory.")
    var redis: String?

    @Option(help: "Key prefix in Redis (one per deployment sharing a Redis).")
    var keyPrefix: String = "toolops"

    @Option(help: "This replica's id (default: $POD_NAME, else $HOSTNAME, else host name and pid).")
    var replicaID: String?

    @Option(help: "Seconds between registry heartbeats.")
    var heartbeatInterval: Double = 5

    @Option(help: "Seconds a registration lives without a heartbeat.")
    var registrationTTL: Double = 15

    @Option(help: "Seconds to keep serving after readiness turns false on SIGTERM.")
    var drainDelay: Double = 0

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        var logger = Logger(label: "toolops")
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
        logger.logLevel = level
        let server = try ToolOpsServer(
            configuration: .init(
                host: host, port: port, redisURL: redis, keyPrefix: keyPrefix, replicaID: replicaID,
                heartbeatInterval: .seconds(heartbeatInterval), registrationTTL: .seconds(registrationTTL),
                drainDelay: .seconds(drainDelay)),
            logger: logger)
        try await server.run()
    }
}
