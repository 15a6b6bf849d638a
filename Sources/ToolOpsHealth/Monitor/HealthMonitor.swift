import Synchronization
import ToolOpsCore

/// How the monitor runs one registered check.
public struct HealthCheckOptions: Sendable, Hashable {
    /// A failing critical check makes the replica `unhealthy`; a failing non-critical one only
    /// `degraded`. Default `true`.
    public var critical: Bool
    /// The check is cancelled and reported `unhealthy` after this long. `nil` uses
    /// ``HealthMonitor/Configuration/defaultTimeout``.
    public var timeout: Duration?
    /// Reuse the last result for this long (expensive checks, probes every second).
    /// `nil` (the default) runs the check on every request.
    public var cacheInterval: Duration?

    public init(critical: Bool = true, timeout: Duration? = nil, cacheInterval: Duration? = nil) {
        self.critical = critical
        self.timeout = timeout
        self.cacheInterval = cacheInterval
    }
}

/// The result of one check inside a ``HealthReport``.
public struct HealthReportEntry: Sendable, Hashable {
    public var name: String
    public var critical: Bool
    public var result: HealthCheckResult

    /// What this entry contributes to the overall status: a non-critical check never makes
    /// the replica worse than `degraded`.
    public var effectiveStatus: HealthStatus {
        critical ? result.status : min(result.status, .degraded)
    }
}

/// Every check's result, in registration order, and the overall status (the worst effective
/// status; `healthy` when there are no checks).
public struct HealthReport: Sendable, Hashable {
    public var status: HealthStatus
    public var timestamp: ClockInstant
    public var checks: [HealthReportEntry]

    public init(timestamp: ClockInstant, checks: [HealthReportEntry]) {
        self.timestamp = timestamp
        self.checks = checks
        self.status = checks.map(\.effectiveStatus).max() ?? .healthy
    }

    public subscript(name: String) -> HealthReportEntry? { checks.first { $0.name == name } }
}

/// The answer to "should this replica receive traffic?".
public struct Readiness: Sendable, Hashable {
    public var isReady: Bool
    public var status: HealthStatus
    /// Set while graceful shutdown is in progress: the replica is draining.
    public var isShuttingDown: Bool
}

/// Holds the registered checks, runs them (in parallel, each with its timeout), aggregates the
/// results and answers liveness and readiness.
///
/// ```swift
/// let health = HealthMonitor()
/// try health.register("memory", try MemoryHealthCheck())
/// try health.register("redis", RedisHealthCheck(client: redis), options: .init(critical: false))
/// let report = await health.report()
/// ```
public final class HealthMonitor: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Timeout of a check that does not set its own. Default 5 s (Kubernetes' default
        /// probe timeout is 1 s, so keep checks well under it or cache them).
        public var defaultTimeout: Duration
        /// Whether a `degraded` replica is ready. Default `true`: degraded means "working,
        /// with reduced guarantees" (e.g. limits on the local fallback while Redis is down),
        /// and taking every replica out of the load balancer for it would turn a partial
        /// outage into a full one.
        public var degradedIsReady: Bool

        public init(defaultTimeout: Duration = .seconds(5), degradedIsReady: Bool = true) {
            self.defaultTimeout = defaultTimeout
            self.degradedIsReady = degradedIsReady
        }
    }

    struct Registration: Sendable {
        var name: String
        var check: any HealthCheck
        var options: HealthCheckOptions
    }

    struct State {
        var registrations: [Registration] = []
        var cached: [String: (result: HealthCheckResult, until: ClockInstant)] = [:]
        var shuttingDown = false
    }

    public let configuration: Configuration
    let clock: any ToolOpsClock
    let wallClock: any ToolOpsClock
    let state = Mutex(State())

    /// - Parameters:
    ///   - clock: measures durations and timeouts (monotonic).
    ///   - wallClock: stamps results with the time of day.
    public init(
        configuration: Configuration = .init(), clock: any ToolOpsClock = SystemClock(), wallClock: any ToolOpsClock = WallClock()
    ) throws(ToolOpsError) {
        guard configuration.defaultTimeout > .zero else {
            throw ToolOpsError(.invalidConfiguration, "defaultTimeout must be positive")
        }
        self.configuration = configuration
        self.clock = clock
        self.wallClock = wallClock
    }

    /// Adds a check. Names are unique, 1–64 characters of `a-z A-Z 0-9 - _ .` (they appear in
    /// URLs such as `/health/redis`).
    public func register(_ name: String, _ check: any HealthCheck, options: HealthCheckOptions = .init()) throws(ToolOpsError) {
        guard !name.isEmpty, name.utf8.count <= 64,
            name.utf8.allSatisfy({ $0.isASCIIAlphanumeric || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") })
        else {
            throw ToolOpsError(.invalidConfiguration, "health check name \"\(name)\" must be 1–64 characters of a-z A-Z 0-9 - _ .")
        }
        if let timeout = options.timeout, timeout <= .zero {
            throw ToolOpsError(.invalidConfiguration, "timeout of health check \(name) must be positive")
        }
        if let interval = options.cacheInterval, interval <= .zero {
            throw ToolOpsError(.invalidConfiguration, "cacheInterval of health check \(name) must be positive")
        }
        let added = state.withLock { state -> Bool in
            guard !state.registrations.contains(where: { $0.name == name }) else { return false }
            state.registrations.append(Registration(name: name, check: check, options: options))
            return true
        }
        guard added else { throw ToolOpsError(.invalidConfiguration, "a health check named \(name) is already registered") }
    }

    /// Removes a check; returns whether it was registered.
    @discardableResult
    public func unregister(_ name: String) -> Bool {
        state.withLock { state in
            state.cached[name] = nil
            guard let index = state.registrations.firstIndex(where: { $0.name == name }) else { return false }
            state.registrations.remove(at: index)
            return true
        }
    }

    /// The registered names, in registration order.
    public var checkNames: [String] { state.withLock { $0.registrations.map(\.name) } }

    /// Runs every check in parallel; results come back in registration order.
    public func report() async -> HealthReport {
        let registrations = state.withLock { $0.registrations }
        let results = await withTaskGroup(of: (Int, HealthCheckResult).self) { group in
            for (index, registration) in registrations.enumerated() {
                group.addTask { (index, await self.run(registration)) }
            }
            var results = [HealthCheckResult?](repeating: nil, count: registrations.count)
            for await (index, result) in group { results[index] = result }
            return results
        }
        let entries = zip(registrations, results).map { registration, result in
            HealthReportEntry(
                name: registration.name, critical: registration.options.critical,
                result: result ?? .unhealthy("check did not run"))
        }
        return HealthReport(timestamp: wallClock.now, checks: entries)
    }

    /// Runs one check by name; `nil` when no check has that name.
    public func check(_ name: String) async -> HealthReportEntry? {
        guard let registration = state.withLock({ $0.registrations.first { $0.name == name } }) else { return nil }
        return HealthReportEntry(name: name, critical: registration.options.critical, result: await run(registration))
    }

    /// Not ready while shutting down, or when the report is `unhealthy` (or `degraded` and
    /// ``Configuration/degradedIsReady`` is off). The checks are not run while shutting down.
    public func readiness() async -> Readiness {
        if isShuttingDown { return Readiness(isReady: false, status: .unhealthy, isShuttingDown: true) }
        let status = await report().status
        let ready = status == .healthy || (status == .degraded && configuration.degradedIsReady)
        // Shutdown may have begun while the checks ran.
        return Readiness(isReady: ready && !isShuttingDown, status: status, isShuttingDown: isShuttingDown)
    }

    /// Marks the replica as draining: readiness answers "not ready" from now on. Called by
    /// ``ReadinessService`` when graceful shutdown begins.
    public func beginShutdown() { state.withLock { $0.shuttingDown = true } }

    public var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }

    func run(_ registration: Registration) async -> HealthCheckResult {
        let name = registration.name
        let started = clock.now
        if let cached = state.withLock({ $0.cached[name] }), started < cached.until {
            var result = cached.result
            result.duration = .zero
            return result
        }
        let timeout = registration.options.timeout ?? configuration.defaultTimeout
        var result = await runWithTimeout(registration.check, timeout: timeout)
        result.duration = clock.now - started
        result.timestamp = wallClock.now
        if let interval = registration.options.cacheInterval {
            let until = started + interval
            state.withLock { state in
                // Only while still registered: a late result must not resurrect a removed check.
                if state.registrations.contains(where: { $0.name == name }) { state.cached[name] = (result, until) }
            }
        }
        return result
    }

    /// Races the check against the clock; the loser is cancelled and awaited, so a timed-out
    /// check does not keep running after its result was reported.
    func runWithTimeout(_ check: any HealthCheck, timeout: Duration) async -> HealthCheckResult {
        let clock = self.clock
        return await withTaskGroup(of: HealthCheckResult?.self) { group in
            group.addTask {
                do {
                    return try await check.check()
                } catch is CancellationError {
                    return Task.isCancelled ? nil : .unhealthy("check was cancelled", error: "CancellationError")
                } catch {
                    return .unhealthy("check failed", error: String(describing: error))
                }
            }
            group.addTask {
                try? await clock.sleep(for: timeout)
                if Task.isCancelled { return nil }
                return .unhealthy("check timed out after \(timeout.formattedMilliseconds)", error: "timed out")
            }
            var outcome: HealthCheckResult?
            for await result in group {
                group.cancelAll()
                if outcome == nil { outcome = result }
            }
            return outcome ?? .unhealthy("check was cancelled")
        }
    }
}

extension Duration {
    var formattedMilliseconds: String {
        let ms = millisecondsDouble
        return ms == ms.rounded() ? "\(Int64(ms)) ms" : "\(ms) ms"
    }
}

extension UInt8 {
    var isASCIIAlphanumeric: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}
