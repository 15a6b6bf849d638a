import Foundation
import Logging
import MCP
import Synchronization
import ToolOpsCore

#if canImport(System)
import System
#else
@preconcurrency import SystemPackage
#endif

/// An MCP server this process starts as a child and talks to over stdio, its tools offered as
/// ToolOps tools — proxy mode: the pipeline (auth, limits, cache, breaker) in front of an MCP
/// server somebody else wrote.
///
/// ```swift
/// let upstream = try await MCPUpstream.start(command: "/usr/local/bin/github-mcp", arguments: ["stdio"])
/// let registry = try ToolRegistry(try await upstream.definitions())
/// // … a pipeline over `registry`, then MCPToolServer(registry:pipeline:configuration: .init(unprefixedNamespace: "upstream"))
/// await upstream.stop()
/// ```
///
/// Each upstream tool becomes `namespace:name` (tools whose names are not valid tool names are
/// skipped, with a warning), with its input schema; tools the upstream does not declare
/// read-only (`readOnlyHint: true`) are tagged `write` (never cached). Results come back
/// unchanged; a call cancelled here (a timeout) is cancelled upstream; an upstream tool
/// error (`isError`) is a failure in the pipeline (retries, breakers and metrics count it), a
/// JSON-RPC "invalid params" from the upstream is invalid input, and a dead upstream is a failed call.
public final class MCPUpstream: Sendable {
    public let command: String
    public let arguments: [String]
    public let namespace: String
    private let client: Client
    private let process: Mutex<Process?>
    private let input: FileHandle
    private let logger: Logger

    private init(command: String, arguments: [String], namespace: String, client: Client, process: Process, input: FileHandle, logger: Logger) {
        self.command = command
        self.arguments = arguments
        self.namespace = namespace
        self.client = client
        self.process = Mutex(process)
        self.input = input
        self.logger = logger
    }

    /// Starts `command` with `arguments` (its standard error is ours) and completes the MCP
    /// handshake with it.
    public static func start(
        command: String, arguments: [String] = [], namespace: String = "upstream", logger: Logger = Logger(label: "toolops.mcp.upstream")
    ) async throws -> MCPUpstream {
        _ = try ToolID(namespace: namespace, name: "probe")  // a valid namespace, or a clear error now
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command)
        process.arguments = arguments
        let toChild = Pipe()
        let fromChild = Pipe()
        process.standardInput = toChild
        process.standardOutput = fromChild
        do {
            try process.run()
        } catch {
            throw ToolOpsError(.invalidConfiguration, "the upstream MCP server \(command) could not be started: \(error.localizedDescription)")
        }
        let transport = StdioTransport(
            input: FileDescriptor(rawValue: fromChild.fileHandleForReading.fileDescriptor),
            output: FileDescriptor(rawValue: toChild.fileHandleForWriting.fileDescriptor), logger: logger)
        let client = Client(name: "toolops", version: ToolOps.version)
        let upstream = MCPUpstream(
            command: command, arguments: arguments, namespace: namespace, client: client, process: process,
            input: toChild.fileHandleForWriting, logger: logger)
        // A child that exits fails the calls waiting for it at once (the client would otherwise
        // wait for answers that cannot come). Called on Foundation's thread: the disconnect is a
        // task of its own, one actor call, awaited by nothing.
        process.terminationHandler = { _ in
            Task { await client.disconnect() }
        }
        if !process.isRunning { await client.disconnect() }
        do {
            _ = try await client.connect(transport: transport)
        } catch {
            await upstream.stop()
            throw ToolOpsError(.invalidConfiguration, "the upstream MCP server \(command) did not complete the MCP handshake: \(error)")
        }
        return upstream
    }

    /// The child's process id while it runs.
    public var processIdentifier: Int32? {
        process.withLock { process in process.flatMap { $0.isRunning ? $0.processIdentifier : nil } }
    }

    /// The upstream's tools as definitions forwarding to it (every page of `tools/list`).
    public func definitions() async throws -> [ToolDefinition] {
        var tools: [Tool] = []
        var cursor: String?
        var seen: Set<String> = []
        var pages = 0
        repeat {
            let page = try await client.listTools(cursor: cursor)
            tools += page.tools
            cursor = page.nextCursor
            pages += 1
            // A cursor seen before, 100 pages or 10,000 tools: an upstream that never ends its list.
            if let next = cursor, !seen.insert(next).inserted || pages >= 100 || tools.count >= 10_000 {
                logger.warning("upstream tool list cut short", metadata: ["tools": "\(tools.count)", "pages": "\(pages)"])
                cursor = nil
            }
        } while cursor != nil
        return tools.compactMap { tool -> ToolDefinition? in
            guard let id = try? ToolID(namespace: namespace, name: tool.name) else {
                logger.warning("upstream tool skipped: its name is not a valid tool name", metadata: ["tool": "\(tool.name.prefix(80))"])
                return nil
            }
            var tags: Set<String> = [MCPToolResult.tag]
            // MCP's defaults for a tool that says nothing: not read-only, destructive. Only a tool
            // that declares itself read-only may be cached.
            if tool.annotations.readOnlyHint != true { tags.insert("write") }
            let (client, name) = (self.client, tool.name)
            return ToolDefinition(id, description: tool.description ?? "", inputSchema: JSONValue(mcp: tool.inputSchema), tags: tags) { call in
                let arguments: [String: Value]? = if case .object(let members) = call.arguments { members.mapValues(\.mcpValue) } else { nil }
                let reply: CallTool.Result
                do {
                    let request: RequestContext<CallTool.Result> = try await client.callTool(name: name, arguments: arguments)
                    // The SDK's wait ignores cancellation: race it against ours, and when the caller
                    // gives up (a timeout), tell the upstream, which ends the wait.
                    reply = try await withThrowingTaskGroup(of: CallTool.Result?.self) { group in
                        group.addTask { try await request.value }
                        group.addTask {
                            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                            return nil
                        }
                        let first = try await group.next() ?? nil
                        group.cancelAll()
                        guard let first else {
                            try? await client.cancelRequest(request.requestID, reason: "cancelled by the caller")
                            throw CancellationError()
                        }
                        return first
                    }
                } catch let error as MCPError {
                    if case .invalidParams(let detail) = error {
                        throw ToolOpsError(.invalidInput, "the upstream refused the arguments: \(detail ?? "invalid params")")
                    }
                    throw ToolOpsError(.toolFailed, "the upstream MCP server failed the call: \(error.localizedDescription)", underlying: error)
                }
                if reply.isError == true { throw MCPToolFailure(content: reply.content) }
                return ToolResult(try MCPToolResult.encode(reply))
            }
        }
    }

    /// Disconnects and ends the upstream: its standard input closes (an MCP server over stdio
    /// exits then); after 2 s it is terminated.
    public func stop() async {
        await client.disconnect()
        try? input.close()
        guard let process = process.withLock({ process in defer { process = nil }; return process }) else { return }
        let deadline = ContinuousClock.now + .seconds(2)
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning {
            process.terminate()
            logger.warning("upstream MCP server did not exit when its input closed; terminated", metadata: ["command": "\(command)"])
        }
    }
}
