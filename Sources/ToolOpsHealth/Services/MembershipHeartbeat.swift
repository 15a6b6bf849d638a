import Logging
import ServiceLifecycle
import ToolOpsCore

/// Keeps this replica registered: registers at start, again every `interval` (with its current
/// health), and deregisters as soon as graceful shutdown begins. A failed heartbeat (Redis down)
/// is retried every `retryInterval` until it succeeds, so after a Redis restart the replica is
/// back in the registry within one heartbeat interval.
public struct MembershipHeartbeat: Service {
    public struct Configuration: Sendable, Hashable {
        /// Time between heartbeats. Default 5 s.
        public var interval: Duration
        /// How long a registration lives without a heartbeat. Default 15 s (three missed beats).
        public var ttl: Duration
        /// Pause before retrying a failed heartbeat. Default 1 s (or `interval`, if shorter).
        public var retryInterval: Duration

        public init(interval: Duration = .seconds(5), ttl: Duration = .seconds(15), retryInterval: Duration = .seconds(1)) {
            self.interval = interval
            self.ttl = ttl
            self.retryInterval = retryInterval
        }
    }

    public let replica: ReplicaInfo
    public let store: any MembershipStore
    public let configuration: Configuration
    let health: HealthMonitor?
    let clock: any ToolOpsClock
    let wallClock: any ToolOpsClock
    let logger: Logger

    /// - Parameter health: when given, each heartbeat carries the current report's summary.
    public init(
        replica: ReplicaInfo, store: any MembershipStore, configuration: Configuration = .init(), health: HealthMonitor? = nil,
        clock: any ToolOpsClock = SystemClock(), wallClock: any ToolOpsClock = WallClock(), logger: Logger = Logger(label: "toolops.membership")
    ) throws(ToolOpsError) {
        guard configuration.interval > .zero, configuration.retryInterval > .zero else {
            throw ToolOpsError(.invalidConfiguration, "heartbeat interval and retryInterval must be positive")
        }
        guard configuration.ttl > configuration.interval else {
            throw ToolOpsError(
                .invalidConfiguration, "heartbeat ttl (\(configuration.ttl)) must exceed the interval (\(configuration.interval)), or replicas flap")
        }
        self.replica = replica
        self.store = store
        self.configuration = configuration
        self.health = health
        self.clock = clock
        self.wallClock = wallClock
        self.logger = logger
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown { try await beat() }
        // Graceful shutdown (or cancellation): leave the registry now rather than after the TTL.
        // A detached task, so a cancelled service still gets its deregistration out.
        let (store, id, logger) = (self.store, replica.id, self.logger)
        await Task.detached {
            do {
                try await store.deregister(id: id)
                logger.info("deregistered replica", metadata: ["replica": "\(id)"])
            } catch {
                logger.warning("could not deregister replica; it expires with its TTL", metadata: ["replica": "\(id)", "error": "\(error)"])
            }
        }.value
    }

    /// Heartbeats until cancelled.
    func beat() async throws {
        var failing = false
        while !Task.isCancelled {
            var current = replica
            if let health {
                let report = await health.report()
                current.health = health.isShuttingDown ? .unhealthy : report.status
                current.checks = Dictionary(
                    uniqueKeysWithValues: report.checks.filter { $0.result.status != .healthy }.map { ($0.name, $0.result.status) })
            }
            current.reportedAt = wallClock.now
            do {
                try await store.register(current, ttl: configuration.ttl)
                if failing { logger.info("heartbeat succeeded again", metadata: ["replica": "\(replica.id)"]) }
                failing = false
                try await clock.sleep(for: configuration.interval)
            } catch is CancellationError {
                return
            } catch {
                if !failing { logger.warning("heartbeat failed", metadata: ["replica": "\(replica.id)", "error": "\(error)"]) }
                failing = true
                try await clock.sleep(for: min(configuration.retryInterval, configuration.interval))
            }
        }
    }
}
