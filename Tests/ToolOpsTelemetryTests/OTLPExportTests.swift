import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing
import ToolOpsCore
import ToolOpsObserve
import ToolOpsTelemetry
import ToolOpsTestSupport
import Tracing

/// A local OTLP/HTTP receiver: keeps every request body sent to `/v1/traces`.
final class OTLPReceiver: Sendable {
    struct Request: Sendable {
        var contentType: String
        var body: [UInt8]
    }

    let requests = Mutex<[Request]>([])
    let port = Mutex<Int?>(nil)

    func application() -> some ApplicationProtocol {
        let router = Router()
        router.post("v1/traces") { [self] request, _ -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            let contentType = request.headers[.contentType] ?? ""
            requests.withLock { $0.append(Request(contentType: contentType, body: Array(buffer: body))) }
            // An empty ExportTraceServiceResponse, in the request's encoding (as the spec asks).
            let json = contentType.hasPrefix("application/json")
            return Response(
                status: .ok, headers: [.contentType: json ? "application/json" : "application/x-protobuf"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: json ? "{}" : "")))
        }
        return Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { [self] channel in port.withLock { $0 = channel.localAddress?.port } }, logger: quietLogger)
    }
}

@Suite("Telemetry: OTLP export", .timeLimit(.minutes(1)))
struct OTLPExportTests {
    let search = try! ToolID("github:search")

    /// Runs `body` with a receiver listening and its base URL.
    func withReceiver(_ body: (OTLPReceiver, String) async throws -> Void) async throws {
        let receiver = OTLPReceiver()
        try await withThrowingTaskGroup(of: Void.self) { group in
            let app = receiver.application()
            group.addTask { try await app.runService(gracefulShutdownSignals: []) }
            let port = try await eventually { receiver.port.withLock { $0 } }
            try await body(receiver, "http://127.0.0.1:\(port)")
            group.cancelAll()
        }
    }

    /// Calls through an observing pipeline with the telemetry's tracer, then shuts its service
    /// down gracefully (which flushes the batch of spans).
    func export(_ telemetry: Telemetry, calls: Int) async throws {
        let tracer = try #require(telemetry.tracer)
        let observe = Observability(.init(tools: .registered([search]), tracer: tracer, logger: nil), metricsFactory: telemetry.metricsFactory)
        let pipeline = ToolPipeline(runner: ToolFunction { _ in ToolResult(["ok": true]) }) { observe.middleware }
        let group = ServiceGroup(services: [telemetry.service], gracefulShutdownSignals: [], logger: quietLogger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for index in 0..<calls { _ = try await pipeline.run(ToolCall(id: "call-\(index)", tool: search)) }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    @Test func spansReachAReceiverAsOTLPJSON() async throws {
        try await withReceiver { receiver, url in
            let telemetry = try Telemetry.make(
                .init(serviceName: "toolops-test", tracing: .otlp(endpoint: url)), environment: ["OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"])
            try await export(telemetry, calls: 3)

            let requests = receiver.requests.withLock { $0 }
            #expect(!requests.isEmpty)
            #expect(requests.allSatisfy { $0.contentType.hasPrefix("application/json") })
            var names: [String] = []
            var callIDs: Set<String> = []
            var services: Set<String> = []
            for request in requests {
                let json = try JSONValue(parsing: request.body)
                for resource in json["resourceSpans"]?.arrayValue ?? [] {
                    for attribute in resource["resource"]?["attributes"]?.arrayValue ?? [] where attribute["key"] == "service.name" {
                        if let name = attribute["value"]?["stringValue"]?.stringValue { services.insert(name) }
                    }
                    for scope in resource["scopeSpans"]?.arrayValue ?? [] {
                        for span in scope["spans"]?.arrayValue ?? [] {
                            names.append(span["name"]?.stringValue ?? "?")
                            for attribute in span["attributes"]?.arrayValue ?? [] where attribute["key"] == "toolops.call.id" {
                                if let id = attribute["value"]?["stringValue"]?.stringValue { callIDs.insert(id) }
                            }
                        }
                    }
                }
            }
            #expect(names == Array(repeating: "tool.exec github:search", count: 3))
            #expect(callIDs == ["call-0", "call-1", "call-2"])
            #expect(services == ["toolops-test"])
        }
    }

    @Test func spansReachAReceiverAsOTLPProtobufByDefault() async throws {
        try await withReceiver { receiver, url in
            // The standard variable, as an operator sets it; a base URL gets /v1/traces.
            let telemetry = try Telemetry.make(.init(), environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_SERVICE_NAME": "from-env"])
            try await export(telemetry, calls: 1)

            let requests = receiver.requests.withLock { $0 }
            let request = try #require(requests.first)
            #expect(request.contentType == "application/x-protobuf")
            // Protobuf carries strings verbatim: the span name and service name are in the body.
            #expect(request.body.contains(subsequence: Array("tool.exec github:search".utf8)))
            #expect(request.body.contains(subsequence: Array("from-env".utf8)))
        }
    }
}

extension JSONValue {
    var arrayValue: [JSONValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence: [UInt8]) -> Bool {
        guard !subsequence.isEmpty, subsequence.count <= count else { return false }
        for start in 0...(count - subsequence.count) where self[start..<(start + subsequence.count)].elementsEqual(subsequence) { return true }
        return false
    }
}

/// Polls `value` until it is not `nil` (5 s at most).
func eventually<T>(_ value: () -> T?) async throws -> T {
    for _ in 0..<500 {
        if let found = value() { return found }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TestFailure("timed out waiting")
}
