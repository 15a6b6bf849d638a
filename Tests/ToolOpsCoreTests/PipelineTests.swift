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
        #expect(call.id.count == 32 && call.id != ToolCall.makeID())
    }
}

@Suite("Manual clock", .timeLimit(.minutes(1)))
struct ManualClockTests {
    @Test func sleepersWakeOnlyWhenTimeIsAdvancedPastTheirDeadline() async throws {
        let clock = ManualClock()
        let start = clock.now
        let woke = Log()
        let sleeper = Task {
            try await clock.sleep(for: .seconds(10))
            woke.append("woke")
        }
        for _ in 0..<100_000 where clock.sleeperCount == 0 { await Task.yield() }
        clock.advance(by: .seconds(9))
        #expect(woke.all.isEmpty)
        clock.advance(by: .seconds(1))
        try await sleeper.value
        #expect(woke.all == ["woke"])
        #expect(clock.now - start == .seconds(10))
    }

    @Test func cancellationEndsASleep() async {
        let clock = ManualClock()
        let sleeper = Task { try await clock.sleep(for: .seconds(10)) }
        for _ in 0..<100_000 where clock.sleeperCount == 0 { await Task.yield() }
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.sleeperCount == 0)
    }
}
