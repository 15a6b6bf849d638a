import Foundation
import MCP
import ToolOpsCore

/// How pipeline results and errors read over MCP.
///
/// A result is text (the JSON value; a string as itself) plus, for a JSON object, the same
/// value as `structuredContent`. A tool adapted from MCP (tagged ``MCPToolResult/tag``)
/// returns its own content unchanged. An error is a tool error (`isError: true`) whose text
/// starts with what happened — `rate limited`, `circuit open`, `too many concurrent calls`,
/// `timed out`, `unauthenticated`, `forbidden`, `temporarily unavailable`, `the tool failed`
/// — and, when the caller may try again, `retry after N s`. Errors of unknown type are named by
/// their type only (their text could carry what the caller should not see).
public enum MCPErrorMapping {
    /// A pipeline result as an MCP tool result.
    public static func result(_ result: ToolResult, definition: ToolDefinition?) -> CallTool.Result {
        if definition?.tags.contains(MCPToolResult.tag) == true, let adapted = MCPToolResult.decode(result.value) {
            return adapted
        }
        let text: String
        if case .string(let string) = result.value {
            text = string
        } else {
            text = (try? result.value.canonicalEncoding()).map { String(decoding: $0, as: UTF8.self) } ?? "null"
        }
        let structured: Value? = if case .object = result.value { result.value.mcpValue } else { nil }
        return CallTool.Result(content: [.text(text: text, annotations: nil, _meta: nil)], structuredContent: structured, isError: false)
    }

    /// A pipeline error as a tool error, and its text.
    public static func result(for error: any Error) -> (text: String, result: CallTool.Result) {
        if let failure = error as? MCPToolFailure {
            return (failure.description, CallTool.Result(content: failure.content, isError: true))
        }
        let text = message(for: error)
        return (text, CallTool.Result(content: [.text(text: text, annotations: nil, _meta: nil)], isError: true))
    }

    /// What happened, in a sentence a model (or a person) can act on.
    public static func message(for error: any Error) -> String {
        guard let error = error as? ToolOpsError else {
            if error is CancellationError { return "cancelled: the call was cancelled" }
            if let failure = error as? MCPToolFailure { return failure.description }
            return "the tool failed (\(type(of: error)))"
        }
        func retry(_ fallback: Duration?) -> String {
            guard let after = error.retryAfter ?? fallback else { return "" }
            return "; retry after \(wholeSeconds(after)) s"
        }
        switch error.code {
        case .rateLimited: return "rate limited: \(error.message)\(retry(.seconds(1)))"
        case .circuitOpen: return "circuit open: \(error.message)\(retry(.seconds(1)))"
        case .bulkheadFull: return "too many concurrent calls: \(error.message)\(retry(.seconds(1)))"
        case .timedOut: return "timed out: \(error.message)"
        case .unauthenticated: return "unauthenticated: \(error.message)"
        case .forbidden: return "forbidden: \(error.message)"
        case .storeUnavailable, .authenticationUnavailable: return "temporarily unavailable: \(error.message)\(retry(.seconds(1)))"
        case .invalidInput: return "invalid arguments: \(error.message)"
        case .toolNotFound: return "unknown tool: \(error.message)"
        case .retriesExhausted:
            if let inner = error.underlying { return message(for: inner) }
            return "the tool failed: \(error.message)"
        default: return "the tool failed: \(error.message)"
        }
    }

    /// Seconds rounded up, at least 1.
    static func wholeSeconds(_ duration: Duration) -> Int64 {
        max(1, (max(0, duration.nanosecondsClamped) + 999_999_999) / 1_000_000_000)
    }
}

/// A tool error an MCP tool reported (`isError: true`), carried through the pipeline as a
/// failure — so retries, breakers and metrics count it — and returned with its own content.
public struct MCPToolFailure: Error, Sendable, CustomStringConvertible {
    public var content: [Tool.Content]

    public init(content: [Tool.Content]) {
        self.content = content
    }

    public var description: String {
        let texts = content.compactMap { if case .text(let text, _, _) = $0 { text } else { nil } }
        return texts.isEmpty ? "the tool reported an error" : texts.joined(separator: "\n")
    }
}

/// The results of tools adapted from MCP, kept as JSON through the pipeline (and the cache).
public enum MCPToolResult {
    /// The tag of tools whose results are MCP tool results.
    public static let tag = "mcp"

    /// `result` as a JSON value.
    public static func encode(_ result: CallTool.Result) throws -> JSONValue {
        let data = try JSONEncoder().encode(result)
        return try JSONValue(parsing: Array(data))
    }

    /// The MCP tool result a JSON value holds, if it does.
    public static func decode(_ value: JSONValue) -> CallTool.Result? {
        guard let bytes = try? value.canonicalEncoding() else { return nil }
        return try? JSONDecoder().decode(CallTool.Result.self, from: Data(bytes))
    }
}
