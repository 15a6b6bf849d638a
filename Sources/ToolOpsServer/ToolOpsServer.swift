import Hummingbird
import Logging
import ServiceLifecycle
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsTelemetry
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The ToolOps server assembled from one configuration: which stores, which checks, which
/// services, which routes. `toolops serve` is a thin shell around it; embed it to run the same
/// server inside your own process.
///
/// Today it serves the health probes and the replica registry (`/healthz`, `/readyz`,
/// `/health`, `/health/{check}`, `/cluster`) and, given ``Configuration/telemetry``, the
/// Prometheus metrics at `/metrics`, with state in memory or, with ``Configuration/redisURL``,
/// in Redis. The tool pipeline and its routes plug in here.
///
/// ```swift
/// let server = try ToolOpsServer(configuration: .init(port: 8080, redisURL: "redis://redis:6379"), logger: logger)
/// try await server.run()   // until SIGTERM or SIGINT
/// ```
public struct ToolOpsServer: Sendable {
    public struct Configuration: Sendable {
        /// Address to listen on. Defaults to `127.0.0.1` (use `0.0.0.0` in a container).
        public var host: String
        /// Port to listen on. Defaults to 8080.
        public var port: Int
        /// Redis for shared state and the cluster registry; `nil` (the default) keeps
        /// everything in this process's memory.
        public var redisURL: String?
        /// Key prefix in Redis, one per deployment sharing a Redis. Defaults to `toolops`.
        public var keyPrefix: String
        /// This replica's id. Defaults to `$POD_NAME`, else `$HOSTNAME`, else host name and pid.
        public var replicaID: String?
        /// Time between registry heartbeats. Defaults to 5 s.
        public var heartbeatInterval: Duration
        /// How long a registration lives without a heartbeat. Defaults to 15 s.
        public var registrationTTL: Duration
        /// How long to keep serving after readiness turns false on SIGTERM. Defaults to 0.
        public var drainDelay: Duration
        /// Metrics and trace export: its registry is served at `/metrics` and its service (the
        /// span exporter) runs first and stops last, so the last spans are flushed. `nil` (the
        /// default): no `/metrics`. The server does not bootstrap it; `toolops serve` does.
        public var telemetry: Telemetry?

        public init(
            host: String = "127.0.0.1", port: Int = 8080, redisURL: String? = nil, keyPrefix: String = "toolops",
            replicaID: String? = nil, heartbeatInterval: Duration = .seconds(5), registrationTTL: Duration = .seconds(15),
            drainDelay: Duration = .zero, telemetry: Telemetry? = nil
        ) {
            self.telemetry = telemetry
            self.host = host
            self.port = port
            self.redisURL = redisURL
            self.keyPrefix = keyPrefix
            self.replicaID = replicaID
            self.heartbeatInterval = heartbeatInterval
            self.registrationTTL = registrationTTL
            self.drainDelay = drainDelay
        }
    }

    public let configuration: Configuration
    /// This replica as the registry lists it.
    public let replica: ReplicaInfo
    public let health: HealthMonitor
    /// The Redis backend, when ``Configuration/redisURL`` is set.
    public let redis: RedisBackend?
    /// Everything the server runs, in the order a `ServiceGroup` starts them. It stops them in
    /// reverse: heartbeat (deregisters), readiness (turns false, then the drain delay), the
    /// HTTP server, and last Redis.
    public let services: [any Service]
    let logger: Logger

    public init(configuration: Configuration, logger: Logger = Logger(label: "toolops")) throws {
        let health = try HealthMonitor()
        try health.register("memory", try MemoryHealthCheck())

        var services: [any Service] = []
        if let telemetry = configuration.telemetry { services.append(telemetry.service) }
        let membership: any MembershipStore
        var redis: RedisBackend?
        if let url = configuration.redisURL {
            let backend = try RedisBackend(
                url: url, configuration: .init(keys: RedisKeySchema(prefix: configuration.keyPrefix)), logger: logger)
            services.append(backend)
            membership = backend.makeMembershipStore()
            // Only the registry needs Redis so far: without it this replica still serves, so a
            // Redis outage makes it degraded (still ready), not unhealthy.
            try health.register("redis", backend.makeHealthCheck(), options: .init(critical: false, timeout: .seconds(2)))
            redis = backend
        } else {
            membership = MemoryMembershipStore()
        }

        let replica = try ReplicaInfo(
            id: configuration.replicaID ?? Self.defaultReplicaID(), host: configuration.host, port: configuration.port,
            version: ToolOps.version)
        let router = Router()
        HealthRoutes(health: health, membership: membership, replicaID: replica.id).register(on: router)
        if let telemetry = configuration.telemetry { MetricsRoutes(registry: telemetry.registry).register(on: router) }
        let app = Application(
            router: router, configuration: .init(address: .hostname(configuration.host, port: configuration.port)), logger: logger)
        services.append(app)
        services.append(ReadinessService(health: health, drainDelay: configuration.drainDelay, logger: logger))
        services.append(
            try MembershipHeartbeat(
                replica: replica, store: membership,
                configuration: .init(interval: configuration.heartbeatInterval, ttl: configuration.registrationTTL),
                health: health, logger: logger))
        self.configuration = configuration
        self.replica = replica
        self.health = health
        self.redis = redis
        self.services = services
        self.logger = logger
    }

    /// Runs every service until one of `signals` (SIGTERM and SIGINT by default) begins a
    /// graceful shutdown.
    public func run(gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint]) async throws {
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: gracefulShutdownSignals, logger: logger))
        logger.info(
            "toolops serving",
            metadata: [
                "address": "\(configuration.host):\(configuration.port)", "replica": "\(replica.id)",
                "state": "\(configuration.redisURL.map { RedisConfiguration.redact($0) } ?? "memory")",
            ])
        try await group.run()
    }

    /// `$POD_NAME`, else `$HOSTNAME` (when valid replica ids), else the host name and pid.
    public static func defaultReplicaID() -> String {
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
