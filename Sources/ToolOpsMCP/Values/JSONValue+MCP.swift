import Foundation
import MCP
import ToolOpsCore

extension JSONValue {
    /// The MCP SDK's `Value` for this JSON value.
    public var mcpValue: MCP.Value {
        switch self {
        case .null: .null
        case .bool(let value): .bool(value)
        case .integer(let value): Int(exactly: value).map(MCP.Value.int) ?? .double(Double(value))
        case .number(let value): .double(value)
        case .string(let value): .string(value)
        case .array(let values): .array(values.map(\.mcpValue))
        case .object(let members): .object(members.mapValues(\.mcpValue))
        }
    }

    /// The JSON value of an MCP `Value` (binary data becomes its `data:` URL string, as the
    /// SDK encodes it).
    public init(mcp value: MCP.Value) {
        switch value {
        case .null: self = .null
        case .bool(let value): self = .bool(value)
        case .int(let value): self = .integer(Int64(value))
        case .double(let value): self = .number(value)
        case .string(let value): self = .string(value)
        case .data(let mimeType, let data): self = .string("data:\(mimeType ?? "application/octet-stream");base64,\(data.base64EncodedString())")
        case .array(let values): self = .array(values.map(JSONValue.init(mcp:)))
        case .object(let members): self = .object(members.mapValues(JSONValue.init(mcp:)))
        }
    }
}
