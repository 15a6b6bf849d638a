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
    /// The caller could not be authenticated (or the authenticator could not be asked).
    case unauthenticated
    /// The caller was authenticated and refused.
    case forbidden

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
        case .unauthenticated, .authenticationUnavailable: self = .unauthenticated
        case .forbidden: self = .forbidden
        default: self = .error
        }
    }

    public var description: String { rawValue }
}

/// What the observing middleware knows about the call running in the current task: its span
/// (when a tracer records one) and its tool's metric label. Bound as a task-local for the rest
/// of the chain, so observers called in the call's task (cache, retry, rate-limit events) and
/// stores can reach them; a task-local read costs a few nanoseconds and allocates nothing.
public final class ToolObservation: Sendable {
    /// The call's span, if one is recording.
    public let span: (any Span)?
    /// The call's tool as a metric label: its id if registered, a shared label otherwise (so
    /// callers cannot grow the series count).
    public let metricLabel: String

    public init(span: (any Span)?, metricLabel: String) {
        self.span = span
        self.metricLabel = metricLabel
    }

    /// The observation of the call running in this task, if an observing middleware is in the chain.
    @TaskLocal public static var current: ToolObservation?
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
        guard let span = ToolObservation.current?.span, span.isRecording else { return nil }
        return span
    }

    /// Adds an event to the current tool call's span, if there is one.
    public static func addEvent(_ name: String, _ attributes: @autoclosure () -> SpanAttributes = [:]) {
        guard let span = current else { return }
        span.addEvent(SpanEvent(name: name, attributes: attributes()))
    }

    /// The tracer a call's span starts on: `configured` if given, else the one of
    /// `InstrumentationSystem` (bootstrapped, or bound to the task with `withTracer`); `nil`
    /// when that is a no-op. The untraced case is recognised by concrete type before
    /// `InstrumentationSystem.tracer` is asked: that property looks for a tracer with a
    /// protocol cast, a conformance lookup on every call.
    public static func activeTracer(_ configured: (any Tracer)?) -> (any Tracer)? {
        if let configured { return configured is NoOpTracer ? nil : configured }
        let instrument = InstrumentationSystem.instrument
        if instrument is NoOpInstrument || instrument is NoOpTracer { return nil }
        let tracer = InstrumentationSystem.tracer
        return tracer is NoOpTracer ? nil : tracer
    }
}
