import Crypto
import Foundation
import MCP
import Synchronization
import Testing
import ToolOpsAuth
import ToolOpsCore
import ToolOpsMCP
import ToolOpsServer
import ToolOpsTestSupport

/// The MCP front over the SDK's in-process transport, with the SDK's own client.
@Suite("MCP: tools through the pipeline")
struct MCPToolServerTests {
    static let readerKey = "tk_reader_0123456789abcdefghijklmnop"

    /// A server over an assembly built from `configure`d settings (memory stores, demo tools).
    func withClient(
        _ configure: (inout ToolOpsConfiguration) -> Void = { _ in }, _ body: (Client, ToolOpsAssembly) async throws -> Void
    ) async throws {
        var configuration = ToolOpsConfiguration()
        configure(&configuration)
        let assembly = try ToolOpsAssembly(configuration, replicaID: "mcp-test", logger: quietLogger)
        let server = try MCPToolServer(registry: assembly.registry, pipeline: assembly.pipeline, logger: quietLogger)
        try await withConnectedClient(server) { try await body($0, assembly) }
    }

    func withConnectedClient(_ server: MCPToolServer, _ body: (Client) async throws -> Void) async throws {
        let (clientSide, serverSide) = await InMemoryTransport.createConnectedPair()
        let mcp = await server.makeServer()
        try await mcp.start(transport: serverSide)
        let client = Client(name: "toolops-tests", version: "1")
        _ = try await client.connect(transport: clientSide)
        do {
            try await body(client)
        } catch {
            await client.disconnect()
            await mcp.stop()
            throw error
        }
        await client.disconnect()
        await mcp.stop()
    }

    func text(_ content: [Tool.Content]) -> String {
        content.compactMap { if case .text(let text, _, _) = $0 { text } else { nil } }.joined()
    }

    @Test func toolsAreListedWithTheirSchemasAndCalledThroughThePipeline() async throws {
        try await withClient({ configuration in
            configuration.policies.cacheEnabled = true
            configuration.policies.cacheTools = ["demo:compute"]
        }) { client, assembly in
            let (tools, _) = try await client.listTools()
            let names = Set(tools.map(\.name))
            #expect(names.isSuperset(of: ["demo_echo", "demo_sleep", "demo_flaky", "demo_compute", "demo_counter"]))
            let sleep = try #require(tools.first { $0.name == "demo_sleep" })
            #expect(sleep.inputSchema.objectValue?["properties"]?.objectValue?["ms"] != nil)
            #expect(tools.first { $0.name == "demo_counter" }?.annotations.destructiveHint == true, "tagged write")

            let echo = try await client.callTool(name: "demo_echo", arguments: ["a": .int(1), "b": "two"])
            #expect(echo.isError == false)
            #expect(text(echo.content) == #"{"a":1,"b":"two"}"#)

            // Cached through the pipeline: computed once for two calls.
            for _ in 0..<2 {
                let compute = try await client.callTool(name: "demo_compute", arguments: ["n": .int(2_000)])
                #expect(text(compute.content).contains(#""primes":303"#))
            }
            #expect(assembly.demo?.computeRuns == 1)
        }
    }

    @Test func refusalsAreToolErrorsThatSayWhenToRetry() async throws {
        try await withClient({ configuration in
            configuration.policies.rateLimitRules = [.init(tools: "demo:echo", rate: 1, per: .seconds(100), burst: 2)]
        }) { client, _ in
            for _ in 0..<2 { #expect(try await client.callTool(name: "demo_echo", arguments: [:]).isError == false) }
            let refused = try await client.callTool(name: "demo_echo", arguments: [:])
            #expect(refused.isError == true)
            #expect(text(refused.content).hasPrefix("rate limited"))
            #expect(text(refused.content).contains("retry after 100 s") || text(refused.content).contains("retry after 99 s"))
            // A failing tool is a tool error too, and the server goes on.
            let failed = try await client.callTool(name: "demo_flaky", arguments: ["fail": true])
            #expect(failed.isError == true && text(failed.content).hasPrefix("the tool failed"))
            #expect(try await client.callTool(name: "demo_compute", arguments: ["n": .int(10)]).isError == false)
        }
    }

    @Test func anOpenBreakerIsAToolErrorThatSaysWhenToRetry() async throws {
        try await withClient({ configuration in
            configuration.policies.breakerEnabled = true
            configuration.policies.breakerMinimumCalls = 3
            configuration.policies.breakerOpenDuration = .seconds(30)
        }) { client, _ in
            for _ in 0..<3 {
                let failed = try await client.callTool(name: "demo_flaky", arguments: ["fail": true])
                #expect(failed.isError == true && text(failed.content).hasPrefix("the tool failed"))
            }
            let open = try await client.callTool(name: "demo_flaky", arguments: [:])
            #expect(open.isError == true)
            #expect(text(open.content).hasPrefix("circuit open") && text(open.content).contains("retry after"), "\(text(open.content))")
            // Other tools have breakers of their own.
            #expect(try await client.callTool(name: "demo_echo", arguments: [:]).isError == false)
        }
    }

    @Test func unknownToolsAndBadArgumentsAreInvalidParamsAndTheServerKeepsServing() async throws {
        try await withClient { client, _ in
            await #expect(throws: MCPError.self) { _ = try await client.callTool(name: "demo_nothing", arguments: [:]) }
            do {
                _ = try await client.callTool(name: "demo_sleep", arguments: ["ms": "soon"])
                Issue.record("bad arguments were accepted")
            } catch let error as MCPError {
                #expect(error.code == -32602)
                #expect("\(error)".contains("arguments.ms must be an integer"))
            }
            await #expect(throws: MCPError.self) { _ = try await client.callTool(name: "demo_echo", arguments: ["deep": Self.nested(300)]) }
            #expect(try await client.callTool(name: "demo_echo", arguments: ["ok": true]).isError == false)
        }
    }

    /// Nested arrays deeper than the JSON depth bound.
    static func nested(_ depth: Int) -> Value {
        (0..<depth).reduce(Value.int(0)) { inner, _ in .array([inner]) }
    }

    @Test func credentialsComeFromTheCallsMetaWhereTheTransportCarriesNone() async throws {
        try await withClient({ configuration in
            configuration.auth.enabled = true
            configuration.auth.apiKeys = [
                .init(id: "reader-1", digest: Array(SHA256.hash(data: Array(Self.readerKey.utf8))), principal: "rita", roles: ["reader"])
            ]
            configuration.auth.roles = ["reader": (inherits: [], allow: ["demo:*"], deny: ["demo:counter"])]
        }) { client, _ in
            let anonymous = try await client.callTool(name: "demo_echo", arguments: [:])
            #expect(anonymous.isError == true && text(anonymous.content).hasPrefix("unauthenticated"))
            func meta(_ key: String) -> Metadata {
                var meta = Metadata()
                meta.fields[MCPToolServer.credentialsMetaKey] = .object(["X-API-Key": .string(key)])
                return meta
            }
            let allowed = try await client.callTool(name: "demo_echo", arguments: ["x": 1], meta: meta(Self.readerKey))
            #expect(allowed.isError == false)
            let denied = try await client.callTool(name: "demo_counter", arguments: [:], meta: meta(Self.readerKey))
            #expect(denied.isError == true && text(denied.content).hasPrefix("forbidden"))
            let wrong = try await client.callTool(name: "demo_echo", arguments: [:], meta: meta("tk_wrong_000000000000000000000000000"))
            #expect(wrong.isError == true && !text(wrong.content).contains("tk_wrong"), "no credential in any answer")
        }
    }

    @Test func adaptedMCPHandlersKeepTheirContentAndTheirErrorsAreFailuresInThePipeline() async throws {
        final class Failures: Sendable {
            let seen = Mutex<[String]>([])
        }
        let failures = Failures()
        struct Recorder: ToolMiddleware {
            let failures: Failures
            func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
                do { return try await next.run(call) } catch {
                    failures.seen.withLock { $0.append("\(type(of: error))") }
                    throw error
                }
            }
        }
        let picture = try MCPToolHandler.definition(
            namespace: "art", tool: Tool(name: "picture", description: "A picture", inputSchema: ["type": "object"])
        ) { _ in
            CallTool.Result(content: [.image(data: "iVBORw0KGgo=", mimeType: "image/png", annotations: nil, _meta: nil)])
        }
        let broken = try MCPToolHandler.definition(
            namespace: "art", tool: Tool(name: "broken", description: nil, inputSchema: ["type": "object"])
        ) { parameters in
            CallTool.Result(content: [.text(text: "no canvas for \(parameters.name)", annotations: nil, _meta: nil)], isError: true)
        }
        let registry = try ToolRegistry([picture, broken])
        let recorder = Recorder(failures: failures)
        let pipeline = ToolPipeline(runner: registry) { recorder }
        let server = try MCPToolServer(registry: registry, pipeline: pipeline, configuration: .init(unprefixedNamespace: "art"))
        try await withConnectedClient(server) { client in
            #expect(Set(try await client.listTools().tools.map(\.name)) == ["picture", "broken"])
            let image = try await client.callTool(name: "picture", arguments: [:])
            guard case .image(let data, let mimeType, _, _)? = image.content.first else {
                Issue.record("expected the handler's image, got \(image.content)")
                return
            }
            #expect(data == "iVBORw0KGgo=" && mimeType == "image/png")
            let error = try await client.callTool(name: "broken", arguments: [:])
            #expect(error.isError == true && text(error.content) == "no canvas for broken")
        }
        #expect(failures.seen.withLock { $0 } == ["MCPToolFailure"], "the handler's isError was a failure the pipeline saw")
    }

    @Test func twoToolsWithOneMCPNameAreAConfigurationError() throws {
        let a = ToolDefinition(try ToolID("a_b:c"), description: "") { _ in ToolResult(.null) }
        let b = ToolDefinition(try ToolID("a:b_c"), description: "") { _ in ToolResult(.null) }
        let registry = try ToolRegistry([a, b])
        #expect(throws: ToolOpsError.self) { try MCPToolServer(registry: registry, pipeline: registry) }
        #expect(throws: Never.self) { try MCPToolServer(registry: registry, pipeline: registry, configuration: .init(separator: "__")) }
    }
}
