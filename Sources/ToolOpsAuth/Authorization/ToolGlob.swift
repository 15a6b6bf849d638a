import ToolOpsCore

/// A pattern over tool ids with `*` anywhere in a segment: `*` (every tool), `github:*`,
/// `git*:search`, `github:list_*`, `*:read_*`. A `*` matches any run of characters within its
/// segment, never the `:` between them.
public struct ToolGlob: Sendable, Hashable, CustomStringConvertible {
    let namespace: [UInt8]
    let name: [UInt8]
    let everything: Bool
    public let description: String

    public init(_ text: String) throws(ToolOpsError) {
        description = text
        if text == "*" {
            everything = true
            namespace = []
            name = []
            return
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ToolOpsError(.invalidConfiguration, "tool pattern \(text.count > 80 ? String(text.prefix(80)) + "…" : text) is not `*` or `namespace:name` (with `*` anywhere in each)")
        }
        everything = false
        namespace = Array(parts[0].utf8)
        name = Array(parts[1].utf8)
    }

    public func matches(_ tool: ToolID) -> Bool {
        if everything { return true }
        var namespace = tool.namespace
        var name = tool.name
        return namespace.withUTF8 { namespace in name.withUTF8 { name in matches(namespace: namespace, name: name) } }
    }

    /// The match on a tool's segments as bytes (an authorizer reads them once for all its rules).
    func matches(namespace text: UnsafeBufferPointer<UInt8>, name nameText: UnsafeBufferPointer<UInt8>) -> Bool {
        everything || (Self.match(namespace, text) && Self.match(name, nameText))
    }

    /// Glob match of one segment; `*` matches any run (iterative, linear in practice).
    static func match(_ pattern: [UInt8], _ text: UnsafeBufferPointer<UInt8>) -> Bool {
        var p = 0, t = 0
        var star = -1, resume = 0
        while t < text.count {
            if p < pattern.count && pattern[p] != UInt8(ascii: "*") && pattern[p] == text[t] {
                p += 1
                t += 1
            } else if p < pattern.count && pattern[p] == UInt8(ascii: "*") {
                star = p
                p += 1
                resume = t
            } else if star >= 0 {
                p = star + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}
