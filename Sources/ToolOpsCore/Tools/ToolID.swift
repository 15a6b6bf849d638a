/// A tool's identity: `namespace:name`, for example `github:create_issue`.
///
/// Both parts are 1…64 characters from `A–Z a–z 0–9 _ - .` and start with a letter or digit.
///
/// ```swift
/// let id = try ToolID("github:create_issue")
/// id.namespace   // "github"
/// ```
public struct ToolID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let namespace: String
    public let name: String
    /// `namespace:name`, built once (it keys every policy lookup).
    public let description: String

    /// The longest part accepted.
    public static let maximumPartLength = 64

    /// Parses `namespace:name`; throws ``ToolOpsError/Code/invalidInput`` naming the problem.
    public init(_ text: String) throws(ToolOpsError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw ToolOpsError(.invalidInput, "tool id '\(Self.clip(text))' must be namespace:name")
        }
        try self.init(namespace: String(text[..<colon]), name: String(text[text.index(after: colon)...]))
    }

    public init(namespace: String, name: String) throws(ToolOpsError) {
        try Self.validate(namespace, part: "namespace")
        try Self.validate(name, part: "name")
        self.namespace = namespace
        self.name = name
        self.description = namespace + ":" + name
    }

    public static func == (lhs: ToolID, rhs: ToolID) -> Bool { lhs.description == rhs.description }
    public func hash(into hasher: inout Hasher) { hasher.combine(description) }

    public static func < (lhs: ToolID, rhs: ToolID) -> Bool { lhs.description < rhs.description }

    private static func validate(_ part: String, part label: String) throws(ToolOpsError) {
        if part.isEmpty { throw ToolOpsError(.invalidInput, "tool \(label) is empty") }
        if part.utf8.count > maximumPartLength {
            throw ToolOpsError(.invalidInput, "tool \(label) longer than \(maximumPartLength) characters")
        }
        for (index, byte) in part.utf8.enumerated() {
            let alnum = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            let punctuation = byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
            if !(alnum || (punctuation && index > 0)) {
                throw ToolOpsError(.invalidInput, "tool \(label) '\(clip(part))' has an invalid character at position \(index + 1)")
            }
        }
    }

    static func clip(_ text: String) -> String { text.count > 80 ? String(text.prefix(80)) + "…" : text }
}

/// A pattern over tool ids: `*` (every tool), `ns:*` (a namespace), or an exact `ns:name`.
public struct ToolPattern: Hashable, Sendable, CustomStringConvertible {
    enum Kind: Hashable, Sendable { case any, namespace(String), exact(ToolID) }
    let kind: Kind

    public init(_ text: String) throws(ToolOpsError) {
        if text == "*" {
            kind = .any
        } else if text.hasSuffix(":*") {
            let namespace = String(text.dropLast(2))
            _ = try ToolID(namespace: namespace, name: "x")
            kind = .namespace(namespace)
        } else {
            kind = .exact(try ToolID(text))
        }
    }

    public static let any = ToolPattern(kind: .any)
    init(kind: Kind) { self.kind = kind }

    public func matches(_ id: ToolID) -> Bool {
        switch kind {
        case .any: return true
        case .namespace(let namespace): return id.namespace == namespace
        case .exact(let exact): return id == exact
        }
    }

    /// More specific patterns win when several match: exact > namespace > any.
    public var specificity: Int {
        switch kind {
        case .any: return 0
        case .namespace: return 1
        case .exact: return 2
        }
    }

    public var description: String {
        switch kind {
        case .any: return "*"
        case .namespace(let namespace): return "\(namespace):*"
        case .exact(let id): return id.description
        }
    }
}
