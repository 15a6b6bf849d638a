import MCP
import ToolOpsCore

/// Tools already written as MCP handlers, run through the ToolOps pipeline without rewriting
/// them.
///
/// ```swift
/// let weather = Tool(name: "forecast", description: "Forecast for a city", inputSchema: schema)
/// let definition = try MCPToolHandler.definition(namespace: "weather", tool: weather) { parameters in
///     CallTool.Result(content: [.text(text: try await forecast(parameters), annotations: nil, _meta: nil)])
/// }
/// let registry = try ToolRegistry([definition])   // then a pipeline and MCPToolServer as usual
/// ```
///
/// The handler gets the parameters it always got (name and arguments; no `_meta`: credentials
/// are the pipeline's business). Its result comes back to the MCP caller unchanged — the
/// definition is tagged ``MCPToolResult/tag`` — and is what the cache stores; a result with
/// `isError: true` is an ``MCPToolFailure`` in the pipeline, so retries, breakers and metrics
/// count it as a failure, and the caller still gets the handler's own content.
public enum MCPToolHandler {
    public typealias Handler = @Sendable (CallTool.Parameters) async throws -> CallTool.Result

    /// A definition serving `tool` (id `namespace:tool.name`) by `handler`.
    public static func definition(
        namespace: String, tool: Tool, tags: Set<String> = [], handler: @escaping Handler
    ) throws(ToolOpsError) -> ToolDefinition {
        let id = try ToolID(namespace: namespace, name: tool.name)
        let schema = JSONValue(mcp: tool.inputSchema)
        let name = tool.name
        return ToolDefinition(id, description: tool.description ?? "", inputSchema: schema, tags: tags.union([MCPToolResult.tag])) { call in
            let arguments: [String: Value]? = if case .object(let members) = call.arguments { members.mapValues(\.mcpValue) } else { nil }
            let result = try await handler(CallTool.Parameters(name: name, arguments: arguments))
            if result.isError == true { throw MCPToolFailure(content: result.content) }
            return ToolResult(try MCPToolResult.encode(result))
        }
    }
}
