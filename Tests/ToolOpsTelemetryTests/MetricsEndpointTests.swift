import Hummingbird
import HummingbirdTesting
import Testing
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsObserve
import ToolOpsResilience
import ToolOpsTelemetry
import ToolOpsTestSupport

/// One sample of the Prometheus text format: `name{label="value",…} number`.
struct Sample: Hashable {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// Parses the Prometheus text exposition format (0.0.4): `# TYPE` lines and samples.
/// Fails on any line that is neither, so a malformed exposition fails the test.
func parsePrometheus(_ text: String) throws -> (types: [String: String], samples: [Sample]) {
    var types: [String: String] = [:]
    var samples: [Sample] = []
    for line in text.split(separator: "\n") {
        if line.hasPrefix("# TYPE ") {
            let parts = line.split(separator: " ")
            guard parts.count == 4 else { throw TestFailure("bad TYPE line: \(line)") }
            types[String(parts[2])] = String(parts[3])
            continue
        }
        if line.hasPrefix("#") { continue }
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
            throw TestFailure("bad sample line: \(line)")
        }
        let series = line[..<space]
        var labels: [String: String] = [:]
        var name = String(series)
        if let brace = series.firstIndex(of: "{") {
            guard series.hasSuffix("}") else { throw TestFailure("bad labels: \(line)") }
            name = String(series[..<brace])
            let body = series[series.index(after: brace)..<series.index(before: series.endIndex)]
            for pair in body.split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[1].hasPrefix("\""), parts[1].hasSuffix("\"") else { throw TestFailure("bad label: \(pair)") }
                labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
            }
        }
        samples.append(Sample(name: name, labels: labels, value: value))
    }
    return (types, samples)
}

@Suite("Telemetry: /metrics")
struct MetricsEndpointTests {
    @Test func metricsAreServedAsPrometheusText() async throws {
        let telemetry = try Telemetry.make(.init(), environment: [:])
        let search = try ToolID("github:search")
        let observe = Observability(.init(tools: .registered([search]), logger: nil), metricsFactory: telemetry.metricsFactory)
        let pipeline = try ToolPipeline(runner: ToolFunction { call in
            if call.arguments["fail"] == .bool(true) { throw TestFailure("no") }
            return ToolResult(.null)
        }) {
            observe.middleware
            try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: try RateLimit(rate: 1, per: .seconds(3600), burst: 3))], observer: observe.resilience))
        }
        for _ in 0..<2 { _ = try await pipeline.run(ToolCall(tool: search)) }
        _ = try? await pipeline.run(ToolCall(tool: search, arguments: ["fail": true]))
        _ = try? await pipeline.run(ToolCall(tool: search))

        let router = Router()
        MetricsRoutes(registry: telemetry.registry).register(on: router)
        let app = Application(router: router)
        try await app.test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
                let (types, samples) = try parsePrometheus(String(buffer: response.body))
                #expect(types["toolops_tool_calls_total"] == "counter")
                #expect(types["toolops_tool_call_duration_seconds"] == "histogram")
                #expect(types["toolops_ratelimit_decisions_total"] == "counter")
                func value(_ name: String, _ labels: [String: String]) -> Double? {
                    samples.first { $0.name == name && $0.labels == labels }?.value
                }
                #expect(value("toolops_tool_calls_total", ["tool": "github:search", "outcome": "ok"]) == 2)
                #expect(value("toolops_tool_calls_total", ["tool": "github:search", "outcome": "error"]) == 1)
                #expect(value("toolops_tool_calls_total", ["tool": "github:search", "outcome": "rate_limited"]) == 1)
                #expect(value("toolops_tool_call_duration_seconds_count", ["tool": "github:search"]) == 4)
                // Buckets from 100 µs to 30 s, cumulative, ending at +Inf.
                let buckets = samples.filter { $0.name == "toolops_tool_call_duration_seconds_bucket" && $0.labels["tool"] == "github:search" }
                #expect(buckets.first?.labels["le"] == "0.0001")
                #expect(buckets.contains { $0.labels["le"] == "30.0" })
                #expect(buckets.last?.labels["le"] == "+Inf" && buckets.last?.value == 4)
                #expect(value("toolops_ratelimit_decisions_total", ["rule": "tool:*", "result": "refused"]) == 1)
            }
        }
    }
}
