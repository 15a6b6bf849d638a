import ServiceContextModule
import Tracing

/// How a tool call ended, as metrics, spans and log lines name it.
public enum ToolOutcome: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The tool ran and returned.
    case ok
    /// The tool, or something around it, failed.
    case error
    /// A rate limit refused the call.
    case rateLimited = "rate_limited"
    /// A circuit breaker refused the call.
    case circuitOpen = "circuit_open"
    /// A bulkhead had no slot for the call.
    case bulkheadFull = "bulkhead_full"
    /// The call ran out of time.
    case timedOut = "timed_out"
    /// The cache answered (a hit, or a stale entry served after a failure).
    case cached
    /// The caller went away (the task was cancelled) before the call ended.
    case cancelled

    /// The outcome of a call that returned `result`.
    public init(result: ToolResult) {
        switch result.metadata["cache"] {
        case "hit", "stale": self = .cached
        default: self = .ok
        }
    }

    /// The outcome of a call that threw `error`.
    public init(error: any Error) {
        if error is CancellationError {
            self = .cancelled
            return
        }
        guard let error = error as? ToolOpsError else {
            self = .error
            return
        }
        switch error.code {
        case .rateLimited: self = .rateLimited
        case .circuitOpen: self = .circuitOpen
        case .bulkheadFull: self = .bulkheadFull
        case .timedOut: self = .timedOut
        case .cachedFailure: self = .cached
        default: self = .error
        }
    }

    public var description: String { rawValue }
}

private enum ToolSpanKey: ServiceContextKey {
    typealias Value = any Span
    static var nameOverride: String? { "toolops.span" }
}

private enum ToolMetricLabelKey: ServiceContextKey {
    typealias Value = String
    static var nameOverride: String? { "toolops.metric-label" }
}

extension ServiceContext {
    /// The span of the tool execution this context belongs to, set by the observing middleware
    /// for the rest of the chain. Policies and stores add their events to it (see ``ToolSpan``).
    public var toolSpan: (any Span)? {
        get { self[ToolSpanKey.self] }
        set { self[ToolSpanKey.self] = newValue }
    }

    /// The call's tool as a metric label: the tool id if it is a registered tool, a shared
    /// label otherwise (so callers cannot grow the series count). Set by the observing
    /// middleware; read by observers that count per tool.
    public var toolMetricLabel: String? {
        get { self[ToolMetricLabelKey.self] }
        set { self[ToolMetricLabelKey.self] = newValue }
    }
}

/// The span of the tool call running in the current task, for events along the chain.
///
/// ```swift
/// ToolSpan.addEvent("cache.hit")
/// ```
/// Costs a task-local read when no observing middleware is in the chain.
public enum ToolSpan {
    /// The current tool call's span, if an observing middleware started one and it records.
    public static var current: (any Span)? {
        guard let span = ServiceContext.current?.toolSpan, span.isRecording else { return nil }
        return span
    }

    /// Adds an event to the current tool call's span, if there is one.
    public static func addEvent(_ name: String, _ attributes: @autoclosure () -> SpanAttributes = [:]) {
        guard let span = current else { return }
        span.addEvent(SpanEvent(name: name, attributes: attributes()))
    }
}
