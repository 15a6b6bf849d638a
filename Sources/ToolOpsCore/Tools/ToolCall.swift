import ServiceContextModule

/// One invocation of a tool.
///
/// ```swift
/// var context = ServiceContext.current ?? .topLevel
/// context.toolTenant = "acme"
/// let call = try ToolCall(tool: ToolID("github:search"), arguments: ["q": "swift"], context: context)
/// ```
public struct ToolCall: Sendable {
    /// Unique id of this call (random, 32 hex digits, unless given).
    public var id: String
    public var tool: ToolID
    public var arguments: JSONValue
    /// Free-form tags, e.g. `write` or `danger` (the cache never stores tagged-unsafe tools).
    public var tags: Set<String>
    /// Identity, tenant and trace travel here (see ``ServiceContext/toolIdentity``).
    public var context: ServiceContext

    public init(
        id: String = ToolCall.makeID(),
        tool: ToolID,
        arguments: JSONValue = .object([:]),
        tags: Set<String> = [],
        context: ServiceContext = .topLevel
    ) {
        self.id = id
        self.tool = tool
        self.arguments = arguments
        self.tags = tags
        self.context = context
    }

    /// The authenticated principal, if any.
    public var identity: String? { context.toolIdentity }
    /// The tenant, if any.
    public var tenant: String? { context.toolTenant }

    public static func makeID() -> String {
        var generator = SystemRandomNumberGenerator()
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for _ in 0..<2 {
            var word = generator.next() as UInt64
            for _ in 0..<16 {
                out.append(hex[Int(word & 15)])
                word >>= 4
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// What a tool returned.
public struct ToolResult: Sendable, Hashable {
    public var value: JSONValue
    /// Annotations added along the way (e.g. `cache: hit`).
    public var metadata: [String: String]

    public init(_ value: JSONValue, metadata: [String: String] = [:]) {
        self.value = value
        self.metadata = metadata
    }
}

private enum ToolIdentityKey: ServiceContextKey {
    typealias Value = String
    static var nameOverride: String? { "toolops.identity" }
}

private enum ToolTenantKey: ServiceContextKey {
    typealias Value = String
    static var nameOverride: String? { "toolops.tenant" }
}

extension ServiceContext {
    /// The authenticated principal making the call.
    public var toolIdentity: String? {
        get { self[ToolIdentityKey.self] }
        set { self[ToolIdentityKey.self] = newValue }
    }

    /// The tenant the call belongs to.
    public var toolTenant: String? {
        get { self[ToolTenantKey.self] }
        set { self[ToolTenantKey.self] = newValue }
    }
}
