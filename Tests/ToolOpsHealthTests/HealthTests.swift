import Logging
import ServiceLifecycle
import Synchronization
import Testing
import ToolOpsCore
import ToolOpsHealth
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Health monitor", .timeLimit(.minutes(1)))
struct HealthMonitorTests {
    @Test func resultsComeBackInRegistrationOrderWithTheWorstStatus() async throws {
        let health = try HealthMonitor()
        try health.register("zeta", SwitchCheck(.healthy()))
        try health.register("alpha", SwitchCheck(.degraded("slow")))
        try health.register("mid", SwitchCheck(.healthy()))
        let report = await health.report()
        #expect(report.checks.map(\.name) == ["zeta", "alpha", "mid"])
        #expect(report.status == .degraded)
        #expect(report["alpha"]?.result.message == "slow")
        #expect(try await HealthMonitor().report().status == .healthy)  // no checks: healthy
    }

    @Test func checksRunInParallel() async throws {
        // Each check waits until all three have started: run one after another they would time out.
        let started = Counter()
        let health = try HealthMonitor(configuration: .init(defaultTimeout: .seconds(10)))
        for name in ["a", "b", "c"] {
            try health.register(
                name,
                FunctionHealthCheck {
                    started.increment()
                    let all = await eventually(within: .seconds(5)) { started.current == 3 }
                    return all ? .healthy() : .unhealthy("ran alone")
                })
        }
        let report = await health.report()
        #expect(report.status == .healthy)
        #expect(started.current == 3)
    }

    @Test func criticalityDecidesTheOverallStatus() async throws {
        let health = try HealthMonitor()
        let optional = SwitchCheck(.unhealthy("down"))
        let critical = SwitchCheck(.healthy())
        try health.register("optional", optional, options: .init(critical: false))
        try health.register("critical", critical)
        var report = await health.report()
        #expect(report["optional"]?.result.status == .unhealthy)  // the check's own answer is kept
        #expect(report["optional"]?.effectiveStatus == .degraded)
        #expect(report.status == .degraded)

        critical.set(.unhealthy("broken"))
        report = await health.report()
        #expect(report.status == .unhealthy)

        critical.set(.degraded("slow"))
        optional.set(.healthy())
        #expect(await health.report().status == .degraded)
    }

    @Test func aThrowingCheckIsUnhealthyWithTheError() async throws {
        struct Broken: Error, CustomStringConvertible { var description: String { "disk on fire" } }
        let health = try HealthMonitor()
        try health.register("disk", FunctionHealthCheck(succeeding: { throw Broken() }))
        try health.register("ok", FunctionHealthCheck(succeeding: {}))
        let report = await health.report()
        #expect(report["disk"]?.result.status == .unhealthy)
        #expect(report["disk"]?.result.error == "disk on fire")
        #expect(report["ok"]?.result.status == .healthy)
        #expect(report.status == .unhealthy)
    }

    @Test func aTimedOutCheckIsCancelledAndReportedUnhealthy() async throws {
        let clock = ManualClock()
        let health = try HealthMonitor(clock: clock)
        let sawCancellation = Flag()
        let finished = Flag()
        try health.register(
            "hangs",
            FunctionHealthCheck {
                defer { finished.set() }
                do {
                    try await Task.sleep(for: .seconds(3600))
                } catch {
                    sawCancellation.set()
                    throw error
                }
                return .healthy()
            }, options: .init(timeout: .milliseconds(200)))
        try health.register("quick", SwitchCheck(.healthy()))
        async let report = health.report()
        #expect(await eventually { clock.sleeperCount >= 1 })
        clock.advance(by: .milliseconds(200))
        let result = await report
        #expect(result["hangs"]?.result.status == .unhealthy)
        #expect(result["hangs"]?.result.message == "check timed out after 200 ms")
        #expect(result["hangs"]?.result.duration == .milliseconds(200))
        #expect(result["quick"]?.result.status == .healthy)
        // Structured: by the time the report is back, the check has been cancelled and has returned.
        #expect(sawCancellation.isSet)
        #expect(finished.isSet)
    }

    @Test func aCheckThatReturnsBeforeItsTimeoutLeavesNoTimerBehind() async throws {
        let clock = ManualClock()
        let health = try HealthMonitor(clock: clock)
        try health.register("fast", SwitchCheck(.healthy()), options: .init(timeout: .seconds(5)))
        #expect(await health.report().status == .healthy)
        #expect(clock.sleeperCount == 0)
    }

    @Test func resultsAreReusedForTheCacheInterval() async throws {
        let clock = ManualClock()
        let wall = ManualClock(now: ClockInstant(nanoseconds: 1_700_000_000_000_000_000))
        let health = try HealthMonitor(clock: clock, wallClock: wall)
        let slow = SwitchCheck(.healthy("first"))
        try health.register("slow", slow, options: .init(cacheInterval: .seconds(10)))
        let first = await health.report()["slow"]?.result
        slow.set(.unhealthy("second"))
        clock.advance(by: .seconds(9))
        wall.advance(by: .seconds(9))
        let cached = await health.report()["slow"]?.result
        #expect(slow.runs.current == 1)
        #expect(cached?.message == "first")
        #expect(cached?.timestamp == first?.timestamp)  // tells the reader how old the answer is
        clock.advance(by: .seconds(1))
        #expect(await health.report()["slow"]?.result.message == "second")
        #expect(slow.runs.current == 2)
    }

    @Test func singleChecksByName() async throws {
        let health = try HealthMonitor()
        try health.register("redis", SwitchCheck(.degraded("fallback")), options: .init(critical: false))
        let entry = await health.check("redis")
        #expect(entry?.result.status == .degraded)
        #expect(entry?.critical == false)
        #expect(await health.check("nope") == nil)
        #expect(health.unregister("redis"))
        #expect(!health.unregister("redis"))
        #expect(health.checkNames.isEmpty)
    }

    @Test func readinessFollowsStatusAndShutdown() async throws {
        let check = SwitchCheck(.healthy())
        let health = try HealthMonitor()
        try health.register("dep", check)
        #expect(await health.readiness().isReady)
        check.set(.degraded("reduced"))
        let degraded = await health.readiness()
        #expect(degraded.isReady && degraded.status == .degraded)
        check.set(.unhealthy("down"))
        #expect(await !health.readiness().isReady)

        let strict = try HealthMonitor(configuration: .init(degradedIsReady: false))
        try strict.register("dep", SwitchCheck(.degraded("reduced")))
        #expect(await !strict.readiness().isReady)

        check.set(.healthy())
        health.beginShutdown()
        let draining = await health.readiness()
        #expect(!draining.isReady && draining.isShuttingDown)
        #expect(check.runs.current == 3)  // not run while shutting down
    }

    @Test func badRegistrationsAreRejected() throws {
        let health = try HealthMonitor()
        for name in ["", "has space", "slash/name", String(repeating: "x", count: 65)] {
            #expect(throws: ToolOpsError.self) { try health.register(name, SwitchCheck()) }
        }
        try health.register("redis", SwitchCheck())
        let duplicate = #expect(throws: ToolOpsError.self) { try health.register("redis", SwitchCheck()) }
        #expect(duplicate?.code == .invalidConfiguration)
        #expect(throws: ToolOpsError.self) { try health.register("t", SwitchCheck(), options: .init(timeout: .zero)) }
        #expect(throws: ToolOpsError.self) { try health.register("c", SwitchCheck(), options: .init(cacheInterval: .seconds(-1))) }
        #expect(throws: ToolOpsError.self) { try HealthMonitor(configuration: .init(defaultTimeout: .zero)) }
        #expect(health.checkNames == ["redis"])
    }

    @Test func timestampsAreRFC3339() {
        #expect(ClockInstant(nanoseconds: 0).rfc3339 == "1970-01-01T00:00:00.000Z")
        #expect(ClockInstant(nanoseconds: 1_764_089_212_345_678_901).rfc3339 == "2025-11-25T16:46:52.345Z")
        #expect(ClockInstant(nanoseconds: -1_000_000).rfc3339 == "1969-12-31T23:59:59.999Z")
    }
}

@Suite("Health lifecycle", .timeLimit(.minutes(1)))
struct HealthLifecycleTests {
    /// Stands in for the HTTP server: records whether readiness was already off when it was
    /// asked to stop.
    struct Server: Service {
        let health: HealthMonitor
        let readyOffWhenStopping = Flag()
        let stopped = Flag()
        func run() async throws {
            try? await gracefulShutdown()
            if health.isShuttingDown { readyOffWhenStopping.set() }
            stopped.set()
        }
    }

    @Test func readinessTurnsFalseBeforeTheServerStops() async throws {
        let health = try HealthMonitor()
        let clock = ManualClock()
        let server = Server(health: health)
        let readiness = ReadinessService(health: health, drainDelay: .seconds(5), clock: clock)
        let group = ServiceGroup(configuration: .init(services: [server, readiness], logger: quietLogger))
        async let run: Void = group.run()
        #expect(await eventually { await health.readiness().isReady })
        await group.triggerGracefulShutdown()
        #expect(await eventually { health.isShuttingDown })
        // Draining: readiness is false while the server still serves.
        #expect(await eventually { clock.sleeperCount == 1 })
        #expect(await !health.readiness().isReady)
        #expect(!server.stopped.isSet)
        clock.advance(by: .seconds(5))
        try await run
        #expect(server.readyOffWhenStopping.isSet)
    }
}
