import Hummingbird
import Logging
import NIOPosix
import ServiceLifecycle
import ToolOpsCore
import ToolOpsMCP
import ToolOpsHTTP
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsTelemetry
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The ToolOps server assembled from one ``ToolOpsConfiguration``: the tool pipeline and its
/// stores (``ToolOpsAssembly``), the health checks, the services, the routes. `toolops serve` is
/// a thin shell around it; embed it to run the same server inside your own process.
///
/// Routes: `POST /v1/tools/{namespace}/{name}`, `GET /v1/tools` (``ToolRoutes``), the probes
/// and the replica registry (`/healthz`, `/readyz`, `/health`, `/health/{check}`, `/cluster`)
/// and, given a ``Telemetry``, `/metrics`.
///
/// ```swift
/// var configuration = ToolOpsConfiguration()
/// configuration.backend = .redis(.init(url: "redis://redis:6379"))
/// let server = try ToolOpsServer(configuration, logger: logger)
/// try await server.run()   // until SIGTERM or SIGINT
/// ```
public struct ToolOpsServer: Sendable {
    public let configuration: ToolOpsConfiguration
    /// This replica as the registry lists it.
    public let replica: ReplicaInfo
    public let health: HealthMonitor
    /// The pipeline, its stores and tools.
    public let assembly: ToolOpsAssembly
    /// The Redis backend, with a Redis configuration.
    public var redis: RedisBackend? { assembly.backend }
    /// Everything the server runs, in the order a `ServiceGroup` starts them. It stops them in
    /// reverse: heartbeat (deregisters), readiness (turns false, then the drain delay), the
    /// HTTP server, the pipeline's services, and last Redis and the telemetry exporter.
    public let services: [any Service]
    let logger: Logger

    /// - Parameters:
    ///   - tools: tools served besides the demo tools (`tools.demo`).
    ///   - telemetry: its registry is served at `/metrics` and its service (the span exporter)
    ///     runs first and stops last, so the last spans are flushed. The server does not
    ///     bootstrap it; `toolops serve` does.
    public init(_ configuration: ToolOpsConfiguration, tools: [ToolDefinition] = [], telemetry: Telemetry? = nil, logger: Logger = Logger(label: "toolops"))
        throws
    {
        let health = try HealthMonitor()
        try health.register("memory", try MemoryHealthCheck())
        let replicaID = configuration.replica.id ?? Self.defaultReplicaID()
        let assembly = try ToolOpsAssembly(configuration, replicaID: replicaID, tools: tools, metricsFactory: telemetry?.metricsFactory, logger: logger)
        for (name, check, critical) in assembly.healthChecks {
            // A Redis outage degrades the replica (each store has its degraded mode); it stays ready.
            try health.register(name, check, options: .init(critical: critical, timeout: .seconds(2)))
        }

        var services: [any Service] = []
        if let telemetry { services.append(telemetry.service) }
        services += assembly.services

        let replica = try ReplicaInfo(
            id: replicaID, host: configuration.server.host, port: configuration.server.port, version: ToolOps.version)
        let router = Router()
        HealthRoutes(health: health, membership: assembly.membership, replicaID: replica.id).register(on: router)
        if let telemetry { MetricsRoutes(registry: telemetry.registry).register(on: router) }
        assembly.routes.register(on: router)
        let mcp = try MCPToolServer(
            registry: assembly.registry, pipeline: assembly.pipeline,
            configuration: .init(tenantHeader: configuration.server.tenantHeader.map { $0.lowercased() }), logger: logger)
        MCPRoutes(server: mcp).register(on: router)
        DashboardRoutes(assembly: assembly, replicaID: replicaID).register(on: router)
        var eventLoops: EventLoopGroupProvider = .singleton
        if let threads = configuration.server.eventLoopThreads {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
            // Before the server in the list: a service group stops its services in reverse
            // order, so the threads are shut down once the server no longer needs them.
            services.append(EventLoopGroupOwner(group: group))
            eventLoops = .shared(group)
        }
        let app = Application(
            router: router, configuration: .init(address: .hostname(configuration.server.host, port: configuration.server.port)),
            eventLoopGroupProvider: eventLoops, logger: logger)
        services.append(app)
        services.append(ReadinessService(health: health, drainDelay: configuration.server.drainDelay, logger: logger))
        services.append(
            try MembershipHeartbeat(
                replica: replica, store: assembly.membership,
                configuration: .init(interval: configuration.replica.heartbeatInterval, ttl: configuration.replica.registrationTTL),
                health: health, logger: logger))
        self.configuration = configuration
        self.replica = replica
        self.health = health
        self.assembly = assembly
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
                "address": "\(configuration.server.host):\(configuration.server.port)", "replica": "\(replica.id)",
                "state": "\(Self.describe(configuration.backend))", "tools": "\(assembly.registry.definitions.count)",
            ])
        try await group.run()
    }

    static func describe(_ backend: ToolOpsConfiguration.Backend) -> String {
        switch backend {
        case .memory: "memory"
        case .file(let directory): "file:\(directory)"
        case .redis(let redis): RedisConfiguration.redact(redis.url)
        }
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

/// Owns the HTTP server's own event-loop group (``ToolOpsConfiguration/Server/eventLoopThreads``):
/// waits for graceful shutdown, then shuts the group's threads down.
struct EventLoopGroupOwner: Service {
    let group: MultiThreadedEventLoopGroup

    func run() async throws {
        try? await gracefulShutdown()
        try await group.shutdownGracefully()
    }
}
