import ToolOpsCore

/// How a policy derives its key from a call.
public struct PolicyKey: Sendable, CustomStringConvertible {
    let kind: String
    let extract: @Sendable (ToolCall) -> String
    /// The key is a function of the tool id alone (built-in keys only), so it can be cached per tool.
    var dependsOnlyOnTool = false

    init(kind: String, dependsOnlyOnTool: Bool = false, extract: @escaping @Sendable (ToolCall) -> String) {
        self.kind = kind
        self.extract = extract
        self.dependsOnlyOnTool = dependsOnlyOnTool
    }

    /// One key per tool (`ns:name`).
    public static let tool = PolicyKey(kind: "tool", dependsOnlyOnTool: true) { $0.tool.description }
    /// One key per namespace.
    public static let namespace = PolicyKey(kind: "namespace", dependsOnlyOnTool: true) { $0.tool.namespace }
    /// One key per identity (`anonymous` when there is none).
    public static let identity = PolicyKey(kind: "identity") { $0.identity ?? "anonymous" }
    /// One key per tenant (`-` when there is none).
    public static let tenant = PolicyKey(kind: "tenant") { $0.tenant ?? "-" }
    /// One key per tenant and tool.
    public static let tenantAndTool = PolicyKey(kind: "tenant-tool") { "\($0.tenant ?? "-")/\($0.tool)" }
    /// One key for everything.
    public static let global = PolicyKey(kind: "global", dependsOnlyOnTool: true) { _ in "*" }
    /// A key of your own; `name` tells such keys apart.
    public static func custom(_ name: String, _ extract: @escaping @Sendable (ToolCall) -> String) -> PolicyKey {
        PolicyKey(kind: name, extract: extract)
    }

    public func key(for call: ToolCall) -> String { extract(call) }
    public var description: String { kind }
}
