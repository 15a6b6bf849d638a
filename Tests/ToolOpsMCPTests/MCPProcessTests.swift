import Crypto
import Foundation
import Logging
import MCP
import ServiceLifecycle
import Testing
import ToolOpsAuth
import ToolOpsCore
import ToolOpsMCP
import ToolOpsServer
import ToolOpsTestSupport
import ToolOpsTesting

/// `toolops mcp` as real processes over stdio, with the SDK's client on the other end (through
/// `MCPUpstream`, which starts a process and connects to it), and the server's `POST /mcp`.
@Suite("MCP: processes, shared Redis, proxy mode, HTTP", .serialized, .timeLimit(.minutes(2)))
struct MCPProcessTests {
    func writeConfiguration(_ json: String) throws -> String {
        let path = NSTemporaryDirectory() + "toolops-mcp-\(UUID().uuidString).json"
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Runs `tool` of `upstream` with `arguments`: the text it answered, and whether it was an error.
    func call(_ tools: [ToolDefinition], _ name: String, _ arguments: JSONValue = [:]) async throws -> (text: String, isError: Bool) {
        let definition = try #require(tools.first { $0.id.name == name }, "no tool \(name) in \(tools.map(\.id))")
        do {
            let result = try await definition.runner.run(ToolCall(tool: definition.id, arguments: arguments))
            let decoded = try #require(MCPToolResult.decode(result.value))
            return (Self.text(decoded.content), false)
        } catch let failure as MCPToolFailure {
            return (failure.description, true)
        }
    }

    static func text(_ content: [Tool.Content]) -> String {
        content.compactMap { if case .text(let text, _, _) = $0 { text } else { nil } }.joined()
    }

    /// Two MCP server processes, one Redis: a limit of 3 holds for both together, and a result
    /// computed through one is served from the cache by the other.
    @Test func twoStdioServersShareOneRedisLimitAndCache() async throws {
        let binary = try #require(toolopsBinary(), "the toolops executable must be built next to the tests")
        try await withRedisServer { redis in
            let configuration = try writeConfiguration(
                """
                {"state": {"backend": "redis", "redis": {"url": "\(redis.url)"}},
                 "log": {"level": "error"},
                 "policies": {"rateLimit": {"rules": [{"tools": "demo:echo", "rate": 1, "per": "100s", "burst": 3}]},
                              "cache": {"tools": ["demo:compute"]}}}
                """)
            let first = try await MCPUpstream.start(command: binary, arguments: ["mcp", "--config", configuration, "--set", "replica.id=mcp-a"], namespace: "demo")
            let second = try await MCPUpstream.start(command: binary, arguments: ["mcp", "--config", configuration, "--set", "replica.id=mcp-b"], namespace: "demo")
            do {
                let (a, b) = (try await first.definitions(), try await second.definitions())
                // The tools are offered as demo_echo, …: seen from here as demo:demo_echo.
                var outcomes: [Bool] = []
                for tools in [a, b, a, b] { outcomes.append(try await call(tools, "demo_echo", ["n": 1]).isError) }
                #expect(outcomes.filter { !$0 }.count == 3, "3 allowed for both processes together: \(outcomes)")
                let refused = try await call(b, "demo_echo")
                #expect(refused.isError && refused.text.hasPrefix("rate limited") && refused.text.contains("retry after"))

                let computed = try await call(a, "demo_compute", ["n": 3_000])
                #expect(computed.text.contains(#""computedBy":"mcp-a""#))
                let cached = try await call(b, "demo_compute", ["n": 3_000])
                #expect(cached.text.contains(#""computedBy":"mcp-a""#), "served from the shared cache: \(cached.text)")
            } catch {
                await first.stop()
                await second.stop()
                throw error
            }
            await first.stop()
            await second.stop()
        }
    }

    /// `toolops mcp` with pipes on its standard input and output, for raw JSON-RPC lines.
    func startRawMCP() throws -> (Process, input: Pipe, output: Pipe) {
        let binary = try #require(toolopsBinary(), "the toolops executable must be built next to the tests")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["mcp", "--set", "log.level=error"]
        let (input, output) = (Pipe(), Pipe())
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        return (process, input, output)
    }

    static let initialize =
        #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#

    /// Raw JSON-RPC lines on a `toolops mcp` process's standard input: a malformed line gets a
    /// parse error, and the requests after it are answered as usual; closing standard input
    /// ends the process cleanly.
    @Test func malformedLinesOnStdioGetAParseErrorAndTheServerKeepsServing() async throws {
        let (process, input, output) = try startRawMCP()
        let lines = [
            Self.initialize,
            #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "{this is not json",
            #"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"demo_echo","arguments":{"after":"garbage"}}}"#,
            #"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"demo_sleep","arguments":{"ms":-5}}}"#,
        ]
        input.fileHandleForWriting.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        // Answers may come in any order: read until ids 2 and 3 and a parse error are in.
        var received = ""
        let deadline = ContinuousClock.now + .seconds(20)
        let reader = output.fileHandleForReading
        while ContinuousClock.now < deadline, !(received.contains(#""id":2"#) && received.contains(#""id":3"#) && received.contains("-32700")) {
            // A blocking read, off the cooperative pool.
            let chunk = await withCheckedContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(returning: reader.availableData) }
            }
            if chunk.isEmpty { break }
            received += String(decoding: chunk, as: UTF8.self)
        }
        try input.fileHandleForWriting.close()
        let exited = await waitFor(seconds: 10) { !process.isRunning }
        if exited == nil { process.terminate() }
        let answers = received.split(separator: "\n").map(String.init)
        #expect(answers.contains { $0.contains("-32700") }, "a parse error for the malformed line: \(received)")
        #expect(answers.contains { $0.contains(#""id":2"#) && $0.contains(#"\"after\":\"garbage\""#) && $0.contains(#""isError":false"#) })
        #expect(answers.contains { $0.contains(#""id":3"#) && $0.contains("-32602") }, "ms below its minimum is invalid params")
        #expect(exited != nil && process.terminationStatus == 0, "standard input closed: a clean exit")
    }

    /// Proxy mode: `toolops mcp -- <another MCP server>` offers that server's tools under their
    /// own names, through the proxy's pipeline (its rate limit), and relays its answers.
    @Test func proxyModePutsThePipelineInFrontOfAnotherMCPServer() async throws {
        let binary = try #require(toolopsBinary(), "the toolops executable must be built next to the tests")
        let configuration = try writeConfiguration(
            """
            {"log": {"level": "error"},
             "policies": {"rateLimit": {"rules": [{"tools": "upstream:demo_echo", "rate": 1, "per": "100s", "burst": 2}]}}}
            """)
        // The upstream is another toolops mcp (the demo tools); the proxy is the process we talk to.
        let proxy = try await MCPUpstream.start(
            command: binary, arguments: ["mcp", "--config", configuration, "--", binary, "mcp", "--set", "log.level=error"], namespace: "via")
        do {
            let tools = try await proxy.definitions()
            #expect(Set(tools.map(\.id.name)).isSuperset(of: ["demo_echo", "demo_compute", "demo_sleep"]), "the upstream's names, unprefixed")
            #expect(try await call(tools, "demo_echo", ["hello": "world"]).text == #"{"hello":"world"}"#)
            #expect(try await call(tools, "demo_echo").isError == false)
            let limited = try await call(tools, "demo_echo")
            #expect(limited.isError && limited.text.hasPrefix("rate limited"), "the proxy's own limit: \(limited.text)")
            // The upstream's tool errors come back as tool errors.
            let failed = try await call(tools, "demo_flaky", ["fail": true])
            #expect(failed.isError && failed.text.contains("the tool failed"))
            // Tools not declared read-only (the demo tools declare nothing) are never cached by the proxy.
            #expect(tools.allSatisfy { $0.tags.contains("write") && $0.tags.contains(MCPToolResult.tag) })
            // Arguments that fail the upstream's schema are refused by the proxy itself.
            let definition = try #require(tools.first { $0.id.name == "demo_sleep" })
            await #expect(throws: ToolOpsError.self) {
                _ = try await definition.runner.run(ToolCall(tool: definition.id, arguments: ["ms": "soon"]))
            }
        } catch {
            await proxy.stop()
            throw error
        }
        await proxy.stop()
    }

    /// Requests read before standard input closed are still answered.
    @Test func callsInFlightWhenStdinClosesAreStillAnswered() async throws {
        let (process, input, output) = try startRawMCP()
        let lines = [
            Self.initialize,
            #"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"demo_sleep","arguments":{"ms":300}}}"#,
        ]
        input.fileHandleForWriting.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        try input.fileHandleForWriting.close()
        let reader = output.fileHandleForReading
        // Everything it wrote, until it exits (end of file).
        let received = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: String(decoding: reader.readDataToEndOfFile(), as: UTF8.self)) }
        }
        process.waitUntilExit()
        #expect(received.split(separator: "\n").contains { $0.contains(#""id":2"#) && $0.contains(#""isError":false"#) }, "\(received)")
        #expect(process.terminationStatus == 0)
    }

    /// An upstream that dies fails the calls waiting for it instead of leaving them hanging.
    @Test func aDeadUpstreamFailsItsCallsAtOnce() async throws {
        let binary = try #require(toolopsBinary(), "the toolops executable must be built next to the tests")
        let upstream = try await MCPUpstream.start(command: binary, arguments: ["mcp", "--set", "log.level=error"], namespace: "up")
        let tools = try await upstream.definitions()
        let sleep = try #require(tools.first { $0.id.name == "demo_sleep" })
        let pid = try #require(upstream.processIdentifier)
        let started = ContinuousClock.now
        let call = Task { try await sleep.runner.run(ToolCall(tool: sleep.id, arguments: ["ms": 20_000])) }
        try await Task.sleep(for: .milliseconds(300))
        kill(pid, SIGKILL)
        await #expect(throws: (any Error).self) { _ = try await call.value }
        #expect(ContinuousClock.now - started < .seconds(10), "failed when the child died, not after the 20 s call")
        await upstream.stop()
    }

    /// `POST /mcp` on the HTTP server: the request's API key authenticates the call.
    @Test func theHTTPServerAnswersMCPWithTheRequestsCredentials() async throws {
        let key = "tk_mcp_http_0123456789abcdefghijklmn"
        var configuration = ToolOpsConfiguration()
        configuration.server.port = try RedisServer.freePort()
        configuration.auth.enabled = true
        configuration.auth.apiKeys = [.init(id: "k1", digest: Array(SHA256.hash(data: Array(key.utf8))), principal: "hal", roles: ["user"])]
        configuration.auth.roles = ["user": (inherits: [], allow: ["demo:*"], deny: [])]
        let server = try ToolOpsServer(configuration, logger: quietLogger)
        let port = configuration.server.port
        try await withThrowingTaskGroup(of: Void.self) { group in
            let services = ServiceGroup(services: server.services, gracefulShutdownSignals: [], logger: quietLogger)
            group.addTask { try await services.run() }
            guard await waitFor(seconds: 10, { (try? await http(port: port, "GET", "/healthz"))?.status == 200 }) != nil else {
                Issue.record("the server did not start")
                await services.triggerGracefulShutdown()
                return
            }
            let headers = ["Content-Type": "application/json", "Accept": "application/json, text/event-stream"]
            let call = #"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"demo_echo","arguments":{"q":"mcp"}}}"#
            let anonymous = try await http(port: port, "POST", "/mcp", headers: headers, body: call)
            #expect(anonymous.status == 200)
            #expect(anonymous.body.contains(#""isError":true"#) && anonymous.body.contains("unauthenticated"))
            let authenticated = try await http(port: port, "POST", "/mcp", headers: headers.merging(["X-API-Key": key]) { $1 }, body: call)
            #expect(authenticated.status == 200 && authenticated.body.contains(#""isError":false"#), "\(authenticated.body)")
            #expect(authenticated.body.contains(#"\"q\":\"mcp\""#) && authenticated.body.contains(#""id":7"#))
            let list = try await http(port: port, "POST", "/mcp", headers: headers, body: #"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#)
            #expect(list.body.contains(#""name":"demo_echo""#))
            let reply = #"{"jsonrpc":"2.0","id":9,"method":"ping","result":{}}"#  // would wait for ever as a "response"
            #expect(try await http(port: port, "POST", "/mcp", headers: headers, body: reply).status == 400)
            let rebinding = try await http(port: port, "POST", "/mcp", headers: headers.merging(["Origin": "http://evil.example"]) { $1 }, body: call)
            #expect(rebinding.status == 403)
            let local = try await http(port: port, "POST", "/mcp", headers: headers.merging(["Origin": "http://localhost:5173"]) { $1 }, body: call)
            #expect(local.status == 200)
            let garbage = try await http(port: port, "POST", "/mcp", headers: headers, body: "{not json")
            #expect(garbage.status >= 400 && garbage.status < 500)
            #expect(!(authenticated.body + anonymous.body + garbage.body).contains(key))
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
        }
    }
}
