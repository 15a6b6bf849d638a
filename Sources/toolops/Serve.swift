import ArgumentParser
import Logging
import ToolOpsCore
import ToolOpsServer
import ToolOpsTelemetry

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

    @Option(help: "Log format: json (one object per line, with trace ids) or text.")
    var logFormat: String = "json"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
        guard let format = Telemetry.Configuration.LogFormat(rawValue: logFormat) else {
            throw ValidationError("unknown log format \(logFormat) (json or text)")
        }
        // Traces are exported when the standard OTEL_* variables ask for it.
        let telemetry: Telemetry
        do {
            telemetry = try Telemetry.make(.init(serviceName: "toolops", logFormat: format, logLevel: level))
        } catch {
            throw ValidationError(error.message)
        }
        telemetry.bootstrap()
        var logger = Logger(label: "toolops")
        logger.logLevel = level
        let server = try ToolOpsServer(
            configuration: .init(
                host: host, port: port, redisURL: redis, keyPrefix: keyPrefix, replicaID: replicaID,
                heartbeatInterval: .seconds(heartbeatInterval), registrationTTL: .seconds(registrationTTL),
                drainDelay: .seconds(drainDelay), telemetry: telemetry),
            logger: logger)
        try await server.run()
    }
}
