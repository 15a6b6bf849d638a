import ArgumentParser
import Hummingbird
import Logging
import ServiceLifecycle
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsRedisBackend
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

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

        let server = try ServerSetup(options: self, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: server.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info(
            "toolops serving",
            metadata: [
                "address": "\(host):\(port)", "replica": "\(server.replica.id)",
                "state": "\(redis.map { RedisConfiguration.redact($0) } ?? "memory")",
            ])
        try await group.run()
    }
}

/// Everything `serve` runs, in the order a `ServiceGroup` should start them (it stops them
/// in reverse: heartbeat first, then readiness and its drain delay, then the HTTP server, then Redis).
struct ServerSetup {
    let replica: ReplicaInfo
    let health: HealthMonitor
    let services: [any Service]

    init(options: Serve, logger: Logger) throws {
        let keys = RedisKeySchema(prefix: options.keyPrefix)
        let health = try HealthMonitor()
        try health.register("memory", try MemoryHealthCheck())

        var services: [any Service] = []
        let membership: any MembershipStore
        if let url = options.redis {
            let client = try RedisClient(url: url, logger: logger)
            services.append(client)
            membership = RedisMembershipStore(client: client, keys: keys)
            // Only the registry needs Redis so far: without it this replica still serves, so a
            // Redis outage makes it degraded (still ready), not unhealthy.
            try health.register("redis", RedisHealthCheck(client: client), options: .init(critical: false, timeout: .seconds(2)))
        } else {
            membership = MemoryMembershipStore()
        }

        let replica = try ReplicaInfo(
            id: options.replicaID ?? Self.defaultReplicaID(), host: options.host, port: options.port, version: ToolOps.version)
        let router = Router()
        HealthRoutes(health: health, membership: membership, replicaID: replica.id).register(on: router)
        let app = Application(
            router: router, configuration: .init(address: .hostname(options.host, port: options.port)), logger: logger)
        services.append(app)
        services.append(ReadinessService(health: health, drainDelay: .seconds(options.drainDelay), logger: logger))
        services.append(
            try MembershipHeartbeat(
                replica: replica, store: membership,
                configuration: .init(interval: .seconds(options.heartbeatInterval), ttl: .seconds(options.registrationTTL)),
                health: health, logger: logger))
        self.replica = replica
        self.health = health
        self.services = services
    }

    static func defaultReplicaID() -> String {
        for name in ["POD_NAME", "HOSTNAME"] {
            if let value = getenv(name).map({ String(cString: $0) }), (try? ReplicaInfo.validateID(value)) != nil { return value }
        }
        var buffer = [CChar](repeating: 0, count: 256)
        let host =
            gethostname(&buffer, buffer.count - 1) == 0
            ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "replica"
        let safe = String(host.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "-" }.prefix(100))
        return "\(safe.isEmpty ? "replica" : safe)-\(getpid())"
    }
}
