import Metrics
import Synchronization
import Tracing

/// The client's metrics and spans.
///
/// Metrics (swift-metrics, from the factory bootstrapped when the client is created):
/// - `toolops_redis_command_duration_seconds{command}`: each `send` and `pipeline` (a pipeline
///   under `PIPELINE`), replies and error replies alike; at most 128 command names, then `OTHER`;
/// - `toolops_redis_errors_total{kind}`: `unavailable` (could not reach Redis, or it is not
///   serving: ``RedisClientError/isUnavailable``), `said_no` (an error reply, a refused command),
///   `cancelled`;
/// - `toolops_redis_connections`: connections open now (commands, pub/sub and leases);
/// - `toolops_redis_pipeline_depth`: commands per write on a connection (automatic pipelining).
///
/// Spans: a command sent by a task that carries a trace context (a tool call, a request) is a
/// client span named after the command (`EVALSHA`), child of that context, with
/// `db.system.name = redis` and `db.operation.name` — never keys or arguments. Background work
/// (heartbeats, probes) has no context and makes no spans.
final class RedisInstrumentation: Sendable {
    let factory: any MetricsFactory
    /// `nil`: the tracer bootstrapped in `InstrumentationSystem` at the time of each command.
    let tracer: (any Tracer)?
    let connections: Meter
    let pipelineDepth: Recorder
    private let errors: [String: Counter]
    private let durations = Mutex<[String: Timer]>([:])
    static let maximumCommandLabels = 128

    init(factory: any MetricsFactory = MetricsSystem.factory, tracer: (any Tracer)? = nil) {
        self.factory = factory
        self.tracer = tracer
        connections = Meter(label: "toolops_redis_connections", factory: factory)
        pipelineDepth = Recorder(label: "toolops_redis_pipeline_depth", aggregate: true, factory: factory)
        errors = Dictionary(uniqueKeysWithValues: ["unavailable", "said_no", "cancelled"].map {
            ($0, Counter(label: "toolops_redis_errors_total", dimensions: [("kind", $0)], factory: factory))
        })
    }

    /// The duration timer of `command` (bounded: names come from code, but a user's code may
    /// build them).
    func duration(_ command: String) -> Timer {
        if let known = durations.withLock({ $0[command] }) { return known }
        let made = Timer(label: "toolops_redis_command_duration_seconds", dimensions: [("command", command)], factory: factory)
        return durations.withLock { durations in
            if let known = durations[command] { return known }
            guard durations.count < Self.maximumCommandLabels else {
                return durations["OTHER", default: Timer(label: "toolops_redis_command_duration_seconds", dimensions: [("command", "OTHER")], factory: factory)]
            }
            durations[command] = made
            return made
        }
    }

    /// Times `body` as `command`, counts its failure, and traces it when the task has a context.
    func measure<T>(_ command: String, _ body: () async throws -> T) async throws -> T {
        let span: (any Span)? = ServiceContext.current.map { context in
            let span = (tracer ?? InstrumentationSystem.tracer).startSpan(command, context: context, ofKind: .client)
            if span.isRecording {
                span.attributes["db.system.name"] = "redis"
                span.attributes["db.operation.name"] = command
            }
            return span
        }
        let start = ContinuousClock.now
        do {
            let result = try await body()
            duration(command).recordNanoseconds((ContinuousClock.now - start).nanoseconds)
            span?.end()
            return result
        } catch {
            duration(command).recordNanoseconds((ContinuousClock.now - start).nanoseconds)
            let kind: String
            if let error = error as? RedisClientError {
                kind = error.isUnavailable ? "unavailable" : "said_no"
            } else {
                kind = "cancelled"
            }
            errors[kind]?.increment()
            if let span {
                span.recordError(error)
                span.setStatus(SpanStatus(code: .error))
                span.end()
            }
            throw error
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }
}
