import Testing
import ToolOpsCore
import ToolOpsTelemetry

@Suite("Telemetry: configuration")
struct TelemetryConfigurationTests {
    @Test func tracingIsOffUnlessTheEnvironmentOrConfigurationAsksForIt() throws {
        #expect(try Telemetry.make(.init(), environment: [:]).tracer == nil)
        #expect(try Telemetry.make(.init(), environment: ["OTEL_TRACES_EXPORTER": "otlp"]).tracer != nil)
        #expect(try Telemetry.make(.init(), environment: ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"]).tracer != nil)
        #expect(try Telemetry.make(.init(tracing: .otlp(endpoint: "http://c:4318")), environment: ["OTEL_SDK_DISABLED": "true"]).tracer == nil)
        #expect(try Telemetry.make(.init(tracing: .otlp(endpoint: "http://c:4318")), environment: ["OTEL_TRACES_EXPORTER": "none"]).tracer == nil)
        #expect(try Telemetry.make(.init(tracing: .disabled), environment: ["OTEL_TRACES_EXPORTER": "otlp"]).tracer == nil)
    }

    /// Each malformed variable is refused at start-up with a message naming it.
    @Test(arguments: [
        (["OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"], "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not built in"),
        (["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"], "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=thrift is not a protocol"),
        (["OTEL_TRACES_EXPORTER": "zipkin"], "OTEL_TRACES_EXPORTER=zipkin is not supported"),
        (["OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"], "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL"),
        (["OTEL_EXPORTER_OTLP_ENDPOINT": "http://:4318"], "OTEL_EXPORTER_OTLP_ENDPOINT has no host"),
        (["OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"], "OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1"),
        (["OTEL_TRACES_SAMPLER": "sometimes"], "OTEL_TRACES_SAMPLER=sometimes is not supported"),
        (["OTEL_SDK_DISABLED": "maybe"], "OTEL_SDK_DISABLED must be true or false"),
        (["OTEL_RESOURCE_ATTRIBUTES": "team"], "OTEL_RESOURCE_ATTRIBUTES: entry 1 is not key=value"),
    ])
    func malformedVariablesAreRefusedByName(environment: [String: String], message: String) {
        var full = environment
        full["OTEL_TRACES_EXPORTER"] = full["OTEL_TRACES_EXPORTER"] ?? "otlp"
        let error = #expect(throws: ToolOpsError.self) { try Telemetry.make(.init(), environment: full) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
    }

    /// Headers and URLs carry credentials: an error about them never shows them.
    @Test func credentialsNeverAppearInErrors() {
        let headers = #expect(throws: ToolOpsError.self) {
            try Telemetry.make(.init(), environment: ["OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc,s3cr3t-without-equals"])
        }
        #expect(headers?.message.contains("entry 2") == true)
        #expect(headers.map { !"\($0)".contains("s3cr3t") && !"\($0)".contains("abc") } == true)

        let url = #expect(throws: ToolOpsError.self) {
            try Telemetry.make(.init(), environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:hunter2@collector:4318"])
        }
        #expect(url.map { !"\($0)".contains("hunter2") } == true)

        let encoding = #expect(throws: ToolOpsError.self) {
            try Telemetry.make(.init(), environment: ["OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%zztoken"])
        }
        #expect(encoding.map { !"\($0)".contains("zztoken") } == true)
    }

    @Test func wellFormedVariablesAreAccepted() throws {
        let telemetry = try Telemetry.make(
            .init(),
            environment: [
                "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318/", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=a%20b, tenant = acme", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25",
            ])
        #expect(telemetry.tracer != nil)
    }
}
