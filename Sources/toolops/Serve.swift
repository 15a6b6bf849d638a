import ArgumentParser
import Logging
import ToolOpsCore
import ToolOpsServer
import ToolOpsTelemetry

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the ToolOps server: the tool endpoint through the whole pipeline, health probes, the replica registry, metrics.",
        discussion: """
            Configuration comes from --config (a JSON file), then TOOLOPS_* environment variables, then flags \
            (--set key.path=value and the shorthands below), each overriding the one before. See Docs/server.md.
            """)

    @Option(help: "A JSON configuration file (examples/ has some).")
    var config: String?

    @Option(name: .customLong("set"), help: "Set a configuration key: --set policies.timeout=2s (repeatable).")
    var settings: [String] = []

    @Option(help: "Address to listen on (server.host; 0.0.0.0 in a container).")
    var host: String?

    @Option(help: "Port to listen on (server.port).")
    var port: Int?

    @Option(help: "Redis URL for shared state (state.backend=redis, state.redis.url).")
    var redis: String?

    @Option(help: "Key prefix in Redis (state.redis.keyPrefix).")
    var keyPrefix: String?

    @Option(help: "This replica's id (replica.id; default: $POD_NAME, else $HOSTNAME, else host name and pid).")
    var replicaID: String?

    @Option(help: "Seconds between registry heartbeats (replica.heartbeatInterval).")
    var heartbeatInterval: Double?

    @Option(help: "Seconds a registration lives without a heartbeat (replica.registrationTTL).")
    var registrationTTL: Double?

    @Option(help: "Seconds to keep serving after readiness turns false on SIGTERM (server.drainDelay).")
    var drainDelay: Double?

    @Option(help: "Log level (log.level): trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    @Option(help: "Log format (log.format): json (one object per line, with trace ids) or text.")
    var logFormat: String?

    /// The shorthand flags as `--set` overrides (after the explicit ones, so they win).
    var overrides: [String] {
        var out = settings
        if let host { out.append("server.host=\(host)") }
        if let port { out.append("server.port=\(port)") }
        if let redis {
            out.append("state.backend=redis")
            out.append("state.redis.url=\(redis)")
        }
        if let keyPrefix { out.append("state.redis.keyPrefix=\(keyPrefix)") }
        if let replicaID { out.append("replica.id=\(replicaID)") }
        if let heartbeatInterval { out.append("replica.heartbeatInterval=\(heartbeatInterval)") }
        if let registrationTTL { out.append("replica.registrationTTL=\(registrationTTL)") }
        if let drainDelay { out.append("server.drainDelay=\(drainDelay)") }
        if let logLevel { out.append("log.level=\(logLevel)") }
        if let logFormat { out.append("log.format=\(logFormat)") }
        return out
    }

    func run() async throws {
        let configuration: ToolOpsConfiguration
        do {
            configuration = try ToolOpsConfiguration.load(ConfigurationSource(file: config, overrides: overrides))
        } catch {
            throw ValidationError(error.message)
        }
        // Traces are exported when the standard OTEL_* variables ask for it.
        let telemetry: Telemetry
        do {
            telemetry = try Telemetry.make(
                .init(serviceName: "toolops", logFormat: configuration.logFormat == "text" ? .text : .json, logLevel: configuration.logLevel))
        } catch {
            throw ValidationError(error.message)
        }
        telemetry.bootstrap()
        var logger = Logger(label: "toolops")
        logger.logLevel = configuration.logLevel
        let server = try ToolOpsServer(configuration, telemetry: telemetry, logger: logger)
        try await server.run()
    }
}
