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
        let start = ContinuousClock.now
        // No tracer bootstrapped: no span, no context to carry — only the label for observers.
        guard let tracer = ToolSpan.activeTracer(observability.configuration.tracer) else {
            return try await ToolObservation.$current.withValue(series.observation) {
                try await complete(call, series: series, span: nil, start: start) { try await next.run(call) }
            }
        }
        let span = tracer.startSpan(series.spanName, context: call.context, ofKind: .internal)
        var inner = call
        inner.context = span.context
        // The span's context becomes the task's, so libraries below (the Redis client, an HTTP
        // client) start their spans as its children.
        return try await ServiceContext.$current.withValue(inner.context) {
            try await ToolObservation.$current.withValue(ToolObservation(span: span, metricLabel: series.label)) {
                try await complete(call, series: series, span: span, start: start) { try await next.run(inner) }
            }
        }
    }

    private func complete(
        _ call: ToolCall, series: Observability.ToolSeries, span: (any Span)?, start: ContinuousClock.Instant,
        _ body: () async throws -> ToolResult
    ) async throws -> ToolResult {
        do {
            let result = try await body()
            finish(call, span: span, series: series, outcome: ToolOutcome(result: result), error: nil, since: start)
            return result
        } catch {
            finish(call, span: span, series: series, outcome: ToolOutcome(error: error), error: error, since: start)
            throw error
        }
    }

    /// Sets every attribute at once, when the call ends (one update of the span's attributes
    /// instead of one per value; samplers see only what `startSpan` is given anyway).
    private func describe(_ call: ToolCall, outcome: ToolOutcome, on span: any Span) {
        // Built as SpanAttribute values (the convertible-protocol subscript costs a dynamic cast
        // per value, and an array one per element).
        var attributes: [String: SpanAttribute] = [:]
        attributes.reserveCapacity(9)
        attributes["toolops.tool.id"] = .string(call.tool.description)
        attributes["toolops.tool.namespace"] = .string(call.tool.namespace)
        attributes["toolops.tool.name"] = .string(call.tool.name)
        attributes["toolops.call.id"] = .string(call.id)
        if !call.tags.isEmpty { attributes["toolops.tool.tags"] = .stringArray(call.tags.sorted()) }
        if let tenant = call.tenant { attributes["toolops.tenant"] = .string(tenant) }
        if let identity = call.identity { attributes["enduser.id"] = .string(identity) }
        attributes["toolops.outcome"] = .string(outcome.rawValue)
        let described = SpanAttributes(attributes)
        // A new span usually has none yet: take ours whole rather than re-inserting each.
        span.updateAttributes { existing in
            if existing.isEmpty { existing = described } else { existing.merge(described) }
        }
    }

    private func finish(
        _ call: ToolCall, span: (any Span)?, series: Observability.ToolSeries, outcome: ToolOutcome, error: (any Error)?,
        since start: ContinuousClock.Instant
    ) {
        let elapsed = ContinuousClock.now - start
        series.calls(outcome)?.increment()
        series.statistics?.add(outcome)
        series.duration.recordNanoseconds(elapsed.nanosecondsClamped)
        if let span, span.isRecording {
            describe(call, outcome: outcome, on: span)
            if let error {
                span.recordError(error)
                span.setStatus(SpanStatus(code: .error, message: outcome.rawValue))
            }
        }
        if let logger = observability.configuration.logger {
            log(call, to: logger, outcome: outcome, error: error, elapsed: elapsed)
        }
        span?.end()
    }

    private func log(_ call: ToolCall, to logger: Logger, outcome: ToolOutcome, error: (any Error)?, elapsed: Duration) {
        let configured = observability.configuration.completedCallLevel
        let level = error != nil && outcome == .error ? max(configured, .warning) : configured
        guard logger.logLevel <= level else { return }
        var metadata: Logger.Metadata = [
            "tool": .string(call.tool.description),
            "outcome": .string(outcome.rawValue),
            "duration_ms": .stringConvertible(elapsed.millisecondsDouble),
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
