import ServiceContextModule
import Synchronization

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

    /// A new call id: 32 hex digits, unique within this process and, with its random
    /// per-process keys, across replicas. Not a secret (it is logged and sent as a header).
    public static func makeID() -> String {
        let (high, low) = CallIDSource.shared.next()
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for var word in [high, low] {
            for _ in 0..<16 {
                out.append(hex[Int(word & 15)])
                word >>= 4
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Call ids from a counter mixed by SplitMix64's finalizer (a bijection of 64-bit words, so
/// no two calls of this process share an id) under two random keys drawn once per process —
/// instead of a `getrandom` system call per call, which was ~1.5 % of a call's CPU.
final class CallIDSource: Sendable {
    static let shared = CallIDSource()

    private let keys: (UInt64, UInt64)
    private let counter = Atomic<UInt64>(0)

    init() {
        var generator = SystemRandomNumberGenerator()
        keys = (generator.next(), generator.next())
    }

    func next() -> (UInt64, UInt64) {
        let n = counter.add(1, ordering: .relaxed).newValue
        return (Self.mix(n ^ keys.0), Self.mix(n &+ keys.1))
    }

    /// SplitMix64's output function: invertible, so distinct inputs give distinct outputs.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
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
