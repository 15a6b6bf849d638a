#if canImport(FoundationEssentials)
import class FoundationEssentials.ProcessInfo
#else
import class Foundation.ProcessInfo
#endif
import Logging
import Metrics
import OTel
import Prometheus
import ServiceLifecycle
import ToolOpsCore
import ToolOpsObserve
import Tracing

/// Logging, metrics and tracing for a process, made from one configuration value and the
/// standard `OTEL_*` environment variables, and bootstrapped in one call.
///
/// - Logs: ``JSONLogHandler`` lines (or swift-log's plain text) with the current span's
///   `trace_id` and `span_id`, redacted.
/// - Metrics: a Prometheus registry (serve it with `MetricsRoutes` at `/metrics`); tool-call
///   durations in buckets from 100 µs to 30 s.
/// - Traces: OTLP/HTTP export through swift-otel, when asked for (see ``Configuration/Tracing``).
///
/// ```swift
/// let telemetry = try Telemetry.make(.init(serviceName: "tools"))
/// telemetry.bootstrap()                              // once per process
/// let group = ServiceGroup(services: [telemetry.service, server], logger: logger)
/// ```
///
/// ``make(_:environment:)`` has no global effect, so tests and embedders can use its parts
/// (``tracer``, ``metricsFactory``, ``makeLogHandler(label:)``) without bootstrapping.
public struct Telemetry: Sendable {
    public struct Configuration: Sendable {
        /// When spans are exported.
        public enum Tracing: Sendable, Hashable {
            /// OTLP/HTTP when the environment asks for it (`OTEL_TRACES_EXPORTER=otlp`, or an
            /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), none otherwise —
            /// a server with no collector does not log export failures. The default.
            case automatic
            /// OTLP/HTTP to `endpoint` (the base URL, e.g. `http://collector:4318`; spans go to
            /// `/v1/traces` under it); the environment may still override it.
            case otlp(endpoint: String)
            /// No tracer is made (the middleware uses whatever `InstrumentationSystem` holds).
            case disabled
        }

        /// How log lines are written.
        public enum LogFormat: String, Sendable, Hashable {
            /// ``JSONLogHandler``: one JSON object per line. The default.
            case json
            /// swift-log's `StreamLogHandler` text, for a terminal.
            case text
        }

        /// `service.name` of exported spans (`OTEL_SERVICE_NAME` overrides). Defaults to `toolops`.
        public var serviceName: String
        public var tracing: Tracing
        public var logFormat: LogFormat
        /// Defaults to `.info`.
        public var logLevel: Logger.Level
        public var redaction: Redaction
        /// Bucket bounds of every duration histogram. Defaults to 100 µs … 30 s (16 buckets).
        public var durationBuckets: [Duration]

        public static let defaultDurationBuckets: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
        ]

        /// Log lines go to standard error instead of standard output (when standard output
        /// carries a protocol, as `toolops mcp` over stdio). Defaults to `false`.
        public var logToStandardError: Bool = false

        public init(
            serviceName: String = "toolops", tracing: Tracing = .automatic, logFormat: LogFormat = .json, logLevel: Logger.Level = .info,
            redaction: Redaction = Redaction(), durationBuckets: [Duration] = Configuration.defaultDurationBuckets
        ) {
            self.serviceName = serviceName
            self.tracing = tracing
            self.logFormat = logFormat
            self.logLevel = logLevel
            self.redaction = redaction
            self.durationBuckets = durationBuckets
        }
    }

    public let configuration: Configuration
    /// The registry every metric lands in; serve it at `/metrics`.
    public let registry: PrometheusCollectorRegistry
    /// The factory over ``registry``.
    public let metricsFactory: PrometheusMetricsFactory
    /// The OTLP tracer, when tracing is on.
    public let tracer: (any Tracer)?
    /// Runs the exporters; run it in the service group beside the server (it flushes spans
    /// on graceful shutdown). Does nothing but wait when tracing is off.
    public let service: any Service
    /// Adds the current span's `trace_id` and `span_id` to log lines.
    public let metadataProvider: Logger.MetadataProvider

    /// Builds everything; nothing global changes. Configuration errors (a malformed
    /// `OTEL_*` value, an unsupported protocol, a bad endpoint) are thrown here, at start-up,
    /// as ``ToolOpsError/Code/invalidConfiguration`` naming the variable (never its value
    /// when it may hold a credential, as the headers do).
    public static func make(
        _ configuration: Configuration = .init(), environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ToolOpsError) -> Telemetry {
        try requireConfiguration(!configuration.durationBuckets.isEmpty, "durationBuckets must not be empty")
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = configuration.durationBuckets
        // Commands per write: powers of two up to a full pipeline.
        factory.valueHistogramBuckets["toolops_redis_pipeline_depth"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        let otel = try OTelSettings(configuration, environment: environment)
        var tracer: (any Tracer)?
        var service: any Service = IdleService()
        if let traces = otel.traces {
            do {
                let backend = try OTel.makeTracingBackend(configuration: traces)
                tracer = backend.factory
                service = backend.service
            } catch {
                throw ToolOpsError(.invalidConfiguration, "tracing could not be set up: \(error)")
            }
        }
        return Telemetry(
            configuration: configuration, registry: registry, metricsFactory: factory, tracer: tracer, service: service,
            metadataProvider: OTel.makeLoggingMetadataProvider())
    }

    /// A log handler as configured (JSON or text), with the trace-id metadata provider.
    public func makeLogHandler(label: String) -> any LogHandler {
        switch configuration.logFormat {
        case .json:
            return JSONLogHandler(
                label: label, level: configuration.logLevel, redaction: configuration.redaction,
                sink: configuration.logToStandardError ? .standardError : .standardOutput, metadataProvider: metadataProvider)
        case .text:
            var handler =
                configuration.logToStandardError
                ? StreamLogHandler.standardError(label: label, metadataProvider: metadataProvider)
                : StreamLogHandler.standardOutput(label: label, metadataProvider: metadataProvider)
            handler.logLevel = configuration.logLevel
            return handler
        }
    }

    /// Installs the log handler, the metrics factory and (when tracing is on) the tracer as
    /// the process's globals. Once per process: swift-log, swift-metrics and
    /// swift-distributed-tracing each trap on a second bootstrap.
    public func bootstrap() {
        let make = self.makeLogHandler
        LoggingSystem.bootstrap({ label, _ in make(label) }, metadataProvider: metadataProvider)
        MetricsSystem.bootstrap(metricsFactory)
        if let tracer { InstrumentationSystem.bootstrap(tracer) }
    }
}

/// Waits for shutdown: the service when there is nothing to export.
struct IdleService: Service {
    func run() async throws {
        try? await gracefulShutdown()
    }
}
