import Synchronization
import Testing
import ToolOpsCore
import ToolOpsTesting

/// Records the order in which middlewares see a call.
struct Recorder: ToolMiddleware {
    let name: String
    let log: Log
    func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        log.append("\(name)>")
        let result = try await next.run(call)
        log.append("<\(name)")
        return result
    }
}

final class Log: Sendable {
    private let entries = Mutex<[String]>([])
    func append(_ entry: String) { entries.withLock { $0.append(entry) } }
    var all: [String] { entries.withLock { $0 } }
}

@Suite("Pipeline builder", .timeLimit(.minutes(1)))
struct PipelineTests {
    let echo = ToolFunction { call in ToolResult(call.arguments) }

    @Test func composesInOrderAndLeavesOutDisabledMiddlewares() async throws {
        let log = Log()
        let enabled = false
        let optional: (any ToolMiddleware)? = nil
        let pipeline = ToolPipeline(runner: echo) {
            Recorder(name: "a", log: log)
            if enabled { Recorder(name: "never", log: log) }
            optional
            Recorder(name: "b", log: log)
            for name in ["c", "d"] { Recorder(name: name, log: log) }
        }
        #expect(pipeline.middlewares.count == 4)
        let result = try await pipeline.run(ToolCall(tool: ToolID("t:echo"), arguments: ["x": 1]))
        #expect(result.value == ["x": 1])
        #expect(log.all == ["a>", "b>", "c>", "d>", "<d", "<c", "<b", "<a"])
    }

    @Test func contextCarriesIdentityAndTenant() throws {
        var context = ServiceContextHelpers.empty
        context.toolIdentity = "alice"
        context.toolTenant = "acme"
        let call = try ToolCall(tool: ToolID("t:x"), context: context)
        #expect(call.identity == "alice" && call.tenant == "acme")
        // Ids are 128 random bits in lowercase hex: well-formed and never repeated.
        #expect(call.id.count == 32 && call.id.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(Set((0..<1_000).map { _ in ToolCall.makeID() }).count == 1_000)
        #expect(try ToolCall(id: "given", tool: ToolID("t:x")).id == "given")
    }
}
