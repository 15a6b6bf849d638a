import Logging
import Metrics
import ToolOpsCore
import Tracing

/// Traces, counts and logs every call that passes through it (made by ``Observability/middleware``).
///
/// - One span per call, `tool.exec <tool>` (the tool's metric label, so unregistered names do
///   not multiply span names), kind internal, child of whatever trace context the call carries
///   (the HTTP layer extracts W3C `traceparent` into it). Attributes: `toolops.tool.id`,
///   `toolops.tool.namespace`, `toolops.tool.name`, `toolops.tool.tags`, `toolops.call.id`,
///   `toolops.tenant`, `enduser.id` (the principal's id, never a credential) and
///   `toolops.outcome`; a failed call records its error and sets the error status. The policies
///   further down add events to it (cache hit or miss, rate-limit decisions, breaker
///   rejections, each retry, Redis round trips).
/// - `toolops_tool_calls_total{tool,outcome}` and `toolops_tool_call_duration_seconds{tool}`.
/// - One completed-call log line (tool, outcome, duration, call id; arguments only when
///   enabled, and then redacted), logged inside the span so it carries the trace ids.
public struct ObserveMiddleware: ToolMiddleware {
    let observability: Observability

    init(_ observability: Observability) {
        self.observability = observability
    }

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        let series = observability.series(for: call.tool)
        let tracer = observability.configuration.tracer ?? InstrumentationSystem.tracer
        let span = tracer.startSpan("tool.exec \(series.label)", context: call.context, ofKind: .internal)
        if span.isRecording { describe(call, on: span) }
        var context = span.context
        context.toolSpan = span
        context.toolMetricLabel = series.label
        var inner = call
        inner.context = context
        let start = ContinuousClock.now
        return try await ServiceContext.$current.withValue(context) {
            do {
                let result = try await next.run(inner)
                finish(call, span: span, series: series, outcome: ToolOutcome(result: result), error: nil, since: start)
                return result
            } catch {
                finish(call, span: span, series: series, outcome: ToolOutcome(error: error), error: error, since: start)
                throw error
            }
        }
    }

    private func describe(_ call: ToolCall, on span: any Span) {
        var attributes = SpanAttributes()
        attributes["toolops.tool.id"] = call.tool.description
        attributes["toolops.tool.namespace"] = call.tool.namespace
        attributes["toolops.tool.name"] = call.tool.name
        attributes["toolops.call.id"] = call.id
        if !call.tags.isEmpty { attributes["toolops.tool.tags"] = call.tags.sorted() }
        if let tenant = call.tenant { attributes["toolops.tenant"] = tenant }
        if let identity = call.identity { attributes["enduser.id"] = identity }
        span.attributes.merge(attributes)
    }

    private func finish(
        _ call: ToolCall, span: any Span, series: Observability.ToolSeries, outcome: ToolOutcome, error: (any Error)?,
        since start: ContinuousClock.Instant
    ) {
        let elapsed = ContinuousClock.now - start
        series.calls(outcome).increment()
        series.duration.recordNanoseconds(elapsed.nanoseconds)
        if span.isRecording {
            span.attributes["toolops.outcome"] = outcome.rawValue
            if let error {
                span.recordError(error)
                span.setStatus(SpanStatus(code: .error, message: outcome.rawValue))
            }
        }
        if let logger = observability.configuration.logger {
            log(call, to: logger, outcome: outcome, error: error, elapsed: elapsed)
        }
        span.end()
    }

    private func log(_ call: ToolCall, to logger: Logger, outcome: ToolOutcome, error: (any Error)?, elapsed: Duration) {
        let configured = observability.configuration.completedCallLevel
        let level = error != nil && outcome == .error ? max(configured, .warning) : configured
        guard logger.logLevel <= level else { return }
        var metadata: Logger.Metadata = [
            "tool": .string(call.tool.description),
            "outcome": .string(outcome.rawValue),
            "duration_ms": .stringConvertible(Double(elapsed.nanoseconds) / 1e6),
            "call_id": .string(call.id),
        ]
        if let tenant = call.tenant { metadata["tenant"] = .string(tenant) }
        if let identity = call.identity { metadata["principal"] = .string(identity) }
        if let error { metadata["error"] = .string(String(describing: error)) }
        if observability.configuration.logArguments {
            metadata["arguments"] = observability.configuration.redaction.redact(call.arguments).metadataValue
        }
        logger.log(level: level, "tool call", metadata: metadata)
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }
}

extension JSONValue {
    /// The value as log metadata (numbers and booleans as their JSON text).
    var metadataValue: Logger.MetadataValue {
        switch self {
        case .object(let members): .dictionary(members.mapValues(\.metadataValue))
        case .array(let elements): .array(elements.map(\.metadataValue))
        case .string(let text): .string(text)
        case .null: .string("null")
        case .bool(let flag): .stringConvertible(flag)
        case .integer(let number): .stringConvertible(number)
        case .number(let number): .stringConvertible(number)
        }
    }
}
