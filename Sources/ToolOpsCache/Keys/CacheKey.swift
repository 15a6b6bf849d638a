import Crypto
import ToolOpsCore

/// A validated cache key: 1…512 bytes of printable ASCII without spaces, so it can be a file
/// name component (after hashing) and part of a Redis key as is.
///
/// ``CacheKeyer`` builds them as `ns:name:<sha-256 hex>`; custom keys go through the same
/// validation.
public struct CacheKey: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let value: String
    /// The longest key accepted, in bytes.
    public static let maximumLength = 512

    public init(_ value: String) throws(ToolOpsError) {
        guard !value.isEmpty else { throw ToolOpsError(.invalidInput, "cache key must not be empty") }
        guard value.utf8.count <= Self.maximumLength else {
            throw ToolOpsError(.invalidInput, "cache key is \(value.utf8.count) bytes, the maximum is \(Self.maximumLength)")
        }
        guard value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw ToolOpsError(.invalidInput, "cache key must be printable ASCII without spaces")
        }
        self.value = value
    }

    /// For keys built from validated parts (``CacheKeyer``): no second check.
    init(trusted value: String) { self.value = value }

    public var description: String { value }
    public static func < (lhs: CacheKey, rhs: CacheKey) -> Bool { lhs.value < rhs.value }
}

/// Which callers share a cached result.
public struct CacheScope: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// Results are per tenant (``ToolCall/tenant``): one tenant never sees another's.
    public static let tenant = CacheScope(rawValue: 1)
    /// Results are per principal (``ToolCall/identity``).
    public static let principal = CacheScope(rawValue: 2)
    /// Every caller shares results (only for tools whose output depends on nothing but the arguments).
    public static let shared: CacheScope = []
}

/// Turns a call into its cache key: a full SHA-256 of the tool id, the tool's version, the
/// scope (tenant and/or principal) and the **canonical JSON** of the arguments, so argument
/// order, number spelling and whitespace never split or merge entries.
///
/// ```swift
/// let keyer = CacheKeyer(scope: .tenant, versions: [(try ToolPattern("search:*"), "2")])
/// let key = try keyer.key(for: call)   // "search:web:3f1c…" (64 hex digits)
/// ```
public struct CacheKeyer: Sendable {
    /// Defaults to ``CacheScope/tenant``.
    public var scope: CacheScope
    /// A tool version per pattern (the most specific wins): bump it when a tool's output
    /// changes and every old entry becomes unreachable at once. Defaults to none.
    public var versions: [(pattern: ToolPattern, version: String)]

    public init(scope: CacheScope = .tenant, versions: [(pattern: ToolPattern, version: String)] = []) {
        self.scope = scope
        self.versions = versions
    }

    public func version(for tool: ToolID) -> String? {
        versions.filter { $0.pattern.matches(tool) }.max { $0.pattern.specificity < $1.pattern.specificity }?.version
    }

    /// The key, or ``ToolOpsError/Code/invalidInput`` if the arguments cannot be encoded
    /// canonically (e.g. a non-finite number).
    public func key(for call: ToolCall) throws(ToolOpsError) -> CacheKey {
        var hasher = SHA256()
        // Every field is length-prefixed (absent fields by a distinct marker), so no two
        // different inputs produce the same byte stream.
        func field(_ text: String?) {
            guard let text else {
                hasher.update(bytes: [0])
                return
            }
            let count = UInt32(truncatingIfNeeded: text.utf8.count)
            hasher.update(bytes: [1, UInt8(count >> 24), UInt8(truncatingIfNeeded: count >> 16), UInt8(truncatingIfNeeded: count >> 8), UInt8(truncatingIfNeeded: count)])
            hasher.update(utf8: text)
        }
        hasher.update(utf8: "toolops-cache-v1")
        field(call.tool.description)
        field(version(for: call.tool))
        field(scope.contains(.tenant) ? (call.tenant ?? "") : nil)
        field(scope.contains(.principal) ? (call.identity ?? "") : nil)
        hasher.update(bytes: try call.arguments.canonicalEncoding())
        // A tool id (validated characters, ≤ 129 bytes) + ':' + 64 hex digits is a valid key.
        return CacheKey(trusted: "\(call.tool):\(hasher.finalizeHex())")
    }
}
