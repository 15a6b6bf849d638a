import Logging
import ServiceLifecycle
import ToolOpsCore

/// Turns readiness off when graceful shutdown begins, then waits `drainDelay` before letting
/// the services listed before it (the HTTP server) stop.
///
/// A `ServiceGroup` shuts its services down in reverse order, so list this service **after**
/// the server:
///
/// ```swift
/// ServiceGroup(services: [app, ReadinessService(health: health), heartbeat], …)
/// ```
///
/// On SIGTERM the heartbeat deregisters, readiness turns false (Kubernetes stops routing new
/// requests once its next probe fails), and only after the drain delay does the server stop
/// accepting work.
public struct ReadinessService: Service {
    public let health: HealthMonitor
    /// How long to keep serving after readiness turned false. Default 0; in Kubernetes set it
    /// to about `periodSeconds × failureThreshold` of the readiness probe (or use a `preStop`
    /// sleep) so the endpoints are updated before the server closes.
    public let drainDelay: Duration
    let clock: any ToolOpsClock
    let logger: Logger

    public init(health: HealthMonitor, drainDelay: Duration = .zero, clock: any ToolOpsClock = SystemClock(), logger: Logger = Logger(label: "toolops.health")) {
        self.health = health
        self.drainDelay = drainDelay
        self.clock = clock
        self.logger = logger
    }

    public func run() async throws {
        do {
            try await gracefulShutdown()
        } catch is CancellationError {
            return  // cancelled, not shut down gracefully: nothing to drain
        }
        health.beginShutdown()
        logger.info("graceful shutdown: readiness is now false", metadata: ["drainDelay": "\(drainDelay)"])
        if drainDelay > .zero { try? await clock.sleep(for: drainDelay) }
    }
}
