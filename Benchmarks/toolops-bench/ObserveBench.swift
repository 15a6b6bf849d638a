import ArgumentParser
import Foundation
import Logging
import OTel
import Prometheus
import ServiceLifecycle
import Synchronization
import ToolOpsCore
import ToolOpsObserve
import Tracing

/// `toolops-bench observe`: what observing a call costs — metrics only; metrics and tracing
/// with swift-otel's tracer (sampled, batched, exported to nowhere); and a JSON log line on
/// top — each against a bare call of the same tool in the same run. Also one JSON log line
/// alone, against swift-log's own cost of the same call with a no-op handler.
struct ObserveBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "observe",
        abstract: "Per-call overhead of metrics, tracing and a JSON log line vs a bare call."
    )

    @Option(help: "Calls per measurement.")
    var calls: Int = 200_000

    @Option(help: "Comma-separated concurrency levels.")
    var concurrency: String = "1,16"

    @Option(help: "Rounds; the fastest round of each row is reported.")
    var rounds: Int = 5

    @Option(help: "Only the row with this name (the bare call always runs).")
    var only: String?

    func run() async throws {
        let levels = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let tool = ToolFunction { _ in ToolResult(.null) }
        let search = try ToolID("bench:search")

        let factory = PrometheusMetricsFactory(registry: PrometheusCollectorRegistry())
        var otel = OTel.Configuration.default
        otel.logs.enabled = false
        otel.metrics.enabled = false
        otel.traces.exporter = .none
        let tracing = try OTel.makeTracingBackend(configuration: otel)
        otel.traces.sampler = .traceIDRatio(ratio: 0.01) ?? .alwaysOff
        let sampled = try OTel.makeTracingBackend(configuration: otel)
        let provider = OTel.makeLoggingMetadataProvider()
        let jsonLogger = Logger(label: "toolops.calls") { label in JSONLogHandler(label: label, sink: .discarding, metadataProvider: provider) }

        func observed(tracer: any Tracer, logger: Logger?) -> ToolPipeline {
            let observe = Observability(.init(tools: .registered([search]), tracer: tracer, logger: logger), metricsFactory: factory)
            return ToolPipeline(runner: tool) { observe.middleware }
        }
        let rows: [(String, ToolPipeline)] = [
            ("bare call", ToolPipeline(runner: tool, middlewares: [])),
            ("metrics", observed(tracer: NoOpTracer(), logger: nil)),
            ("metrics + tracing (recording, dropped)", observed(tracer: DroppingTracer(), logger: nil)),
            ("metrics + tracing", observed(tracer: tracing.factory, logger: nil)),
            ("metrics + tracing, 1% sampled", observed(tracer: sampled.factory, logger: nil)),
            ("metrics + tracing + JSON line", observed(tracer: tracing.factory, logger: jsonLogger)),
        ]
        let call = ToolCall(tool: search, tags: ["read"])

        let group = ServiceGroup(services: [tracing.service, sampled.service], gracefulShutdownSignals: [], logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() })
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            say("\(calls) calls per cell, best of \(rounds) rounds; overhead = ns/call − bare ns/call at the same concurrency")
            say("tracing: \"recording, dropped\" = every span recorded and dropped at its end, synchronously (a no-op exporter without")
            say("a background processor); otherwise swift-otel's tracer (batch processor, no-op exporter), always or 1% sampled;")
            say("logs: JSONLogHandler to a discarding sink")
            say("")
            say(pad("pipeline", 32) + pad("conc", 6) + pad("ns/call", 10) + pad("overhead ns", 13) + "calls/s")
            for level in levels {
                var bare = 0.0
                for (name, pipeline) in rows where name == "bare call" || only.map({ name == $0 }) ?? true {
                    var best = Double.infinity
                    for _ in 0..<max(1, rounds) { best = min(best, try await measurePipeline(pipeline, call, calls: calls, concurrency: level)) }
                    if name == "bare call" { bare = best }
                    let overhead = name == "bare call" ? "—" : String(format: "%.0f", best - bare)
                    say(pad(name, 32) + pad("\(level)", 6) + pad(String(format: "%.0f", best), 10) + pad(overhead, 13) + String(format: "%.0f", 1e9 / best))
                }
            }
            if only == nil || only == "log line" {
            say("")
            say("one log line with the completed-call metadata (6 keys), best of \(rounds) rounds:")
            // The floor: swift-log's own cost of a call with metadata, handled by a no-op handler.
            // The reference: swift-log's StreamLogHandler (text) on standard error, pointed at
            // /dev/null for the measurement, as ours is on standard error too.
            let floor = Logger(label: "toolops.calls") { _ in SwiftLogNoOpLogHandler() }
            let toNull = Logger(label: "toolops.calls") { label in
                JSONLogHandler(label: label, sink: .standardError, metadataProvider: provider)
            }
            let text = Logger(label: "toolops.calls") { label in StreamLogHandler.standardError(label: label, metadataProvider: provider) }
            let cases = [
                ("JSONLogHandler, discarding sink", jsonLogger), ("JSONLogHandler, /dev/null", toNull),
                ("swift-log StreamLogHandler, /dev/null", text), ("swift-log no-op handler (floor)", floor),
            ]
            let null = open("/dev/null", O_WRONLY)
            let savedError = dup(2)
            for (name, logger) in cases {
                var best = Double.infinity
                dup2(null, 2)
                for _ in 0..<max(1, rounds) { best = min(best, measureLines(logger)) }
                dup2(savedError, 2)
                say(pad(name, 40) + String(format: "%.0f ns/line", best))
            }
            close(null)
            close(savedError)
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    func measureLines(_ logger: Logger) -> Double {
        let metadata: Logger.Metadata = [
            "tool": "bench:search", "outcome": "ok", "duration_ms": .stringConvertible(0.042), "call_id": "0123456789abcdef0123456789abcdef",
            "tenant": "acme", "principal": "user-42",
        ]
        let count = calls
        let start = ContinuousClock.now
        for _ in 0..<count { logger.info("tool call", metadata: metadata) }
        return (ContinuousClock.now - start).secondsDouble * 1e9 / Double(count)
    }
}

/// A tracer that records each span (attributes, events, status) and drops it when it ends:
/// what tracing costs the caller with an exporter that does nothing and no hand-off to a
/// background processor. Ids come from a counter (no system randomness).
struct DroppingTracer: Tracer {
    private static let ids = Mutex<UInt64>(0)

    func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind, at instant: @autoclosure () -> Instant,
        function: String, file fileID: String, line: UInt
    ) -> DroppingSpan {
        let id = Self.ids.withLock { $0 += 1; return $0 }
        var context = context()
        context[DroppingSpanID.self] = id
        return DroppingSpan(context: context, operationName: operationName)
    }

    func forceFlush() {}
    func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject.Carrier == Carrier {}
    func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract.Carrier == Carrier {}
}

enum DroppingSpanID: ServiceContextKey { typealias Value = UInt64 }

final class DroppingSpan: Span {
    struct State {
        var name: String
        var attributes = SpanAttributes()
        var events: [SpanEvent] = []
        var status: SpanStatus?
        var ended = false
    }

    let context: ServiceContext
    private let state: Mutex<State>

    init(context: ServiceContext, operationName: String) {
        self.context = context
        self.state = Mutex(State(name: operationName))
    }

    var operationName: String {
        get { state.withLock { $0.name } }
        set { state.withLock { $0.name = newValue } }
    }
    var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { $0.attributes = newValue } }
    }
    var isRecording: Bool { state.withLock { !$0.ended } }
    func setStatus(_ status: SpanStatus) { state.withLock { $0.status = status } }
    func addEvent(_ event: SpanEvent) { state.withLock { $0.events.append(event) } }
    func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {
        state.withLock { $0.events.append(SpanEvent(name: "exception", attributes: attributes)) }
    }
    func addLink(_ link: SpanLink) {}
    func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) { state.withLock { $0.ended = true } }
}
