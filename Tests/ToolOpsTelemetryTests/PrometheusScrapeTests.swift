import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization
import Testing
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsObserve
import ToolOpsResilience
import ToolOpsTelemetry
import ToolOpsTestSupport
import ToolOpsTesting

/// A real Prometheus (Debian's `prometheus`, installed by `make deps`) scrapes `/metrics` from
/// a server with an observed pipeline, and its query API answers with our series: proof that
/// the exposition is what Prometheus itself accepts, not only what our parser reads.
@Suite("Telemetry: scraped by Prometheus", .timeLimit(.minutes(1)))
struct PrometheusScrapeTests {
    @Test func prometheusScrapesTheCallSeries() async throws {
        let binary = try #require(["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first { FileManager.default.isExecutableFile(atPath: $0) },
            "prometheus is not installed (make deps installs it)")
        let telemetry = try Telemetry.make(.init(), environment: [:])
        let search = try ToolID("github:search")
        let observe = Observability(.init(tools: .registered([search]), logger: nil), metricsFactory: telemetry.metricsFactory)
        let pipeline = try ToolPipeline(runner: ToolFunction { _ in ToolResult(.null) }) {
            observe.middleware
            try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: try RateLimit(rate: 1, per: .seconds(3600), burst: 5))], observer: observe.resilience))
        }
        for _ in 0..<7 { _ = try? await pipeline.run(ToolCall(tool: search)) }

        let router = Router()
        MetricsRoutes(registry: telemetry.registry).register(on: router)
        let appPort = Mutex<Int?>(nil)
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in appPort.withLock { $0 = channel.localAddress?.port } }, logger: quietLogger)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService(gracefulShutdownSignals: []) }
            defer { group.cancelAll() }
            guard await waitFor(seconds: 5, { appPort.withLock { $0 } != nil }) != nil, let port = appPort.withLock({ $0 }) else {
                Issue.record("the metrics server did not start")
                return
            }
            let directory = temporaryDirectory("prometheus")
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try """
                global: { scrape_interval: 1s, evaluation_interval: 1s }
                scrape_configs:
                  - job_name: toolops
                    static_configs: [{ targets: ["127.0.0.1:\(port)"] }]
                """.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
            let prometheusPort = try RedisServer.freePort()
            let prometheus = Process()
            prometheus.executableURL = URL(fileURLWithPath: binary)
            prometheus.arguments = [
                "--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                "--web.listen-address=127.0.0.1:\(prometheusPort)",
            ]
            prometheus.standardOutput = FileHandle.nullDevice
            prometheus.standardError = FileHandle.nullDevice
            try prometheus.run()
            defer {
                prometheus.terminate()
                prometheus.waitUntilExit()
            }

            func query(_ expression: String) throws -> [JSONValue] {
                let encoded = expression.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
                let (status, body) = try httpGet(port: prometheusPort, "/api/v1/query?query=\(encoded)")
                guard status == 200 else { return [] }
                let json = try JSONValue(parsing: Array(body.utf8))
                guard case .array(let results)? = json["data"]?["result"] else { return [] }
                return results
            }
            func value(_ result: JSONValue?) -> Double? {
                guard case .array(let pair)? = result?["value"], pair.count == 2 else { return nil }
                return pair[1].stringValue.flatMap(Double.init)
            }
            // The first scrape lands a second or two after Prometheus is ready.
            let ok = #"toolops_tool_calls_total{tool="github:search",outcome="ok"}"#
            let scraped = await waitFor(seconds: 30) { (try? query(ok)).map { !$0.isEmpty } ?? false }
            #expect(scraped != nil, "Prometheus never scraped the series")
            #expect(value(try query(ok).first) == 5)
            #expect(value(try query(#"toolops_tool_calls_total{outcome="rate_limited"}"#).first) == 2)
            #expect(value(try query(#"toolops_tool_call_duration_seconds_count{tool="github:search"}"#).first) == 7)
            #expect(value(try query(#"sum(toolops_ratelimit_decisions_total{result="refused"})"#).first) == 2)
            // Prometheus itself found nothing wrong with the target.
            #expect(value(try query(#"up{job="toolops"}"#).first) == 1)
        }
    }
}
