/// What a caller presented: request headers, looked up case-insensitively.
///
/// ```swift
/// let credentials = AuthCredentials(headers: ["Authorization": "Bearer eyJ…", "x-api-key": "tk_…"])
/// credentials["X-API-Key"]   // "tk_…"
/// ```
/// Its description never shows a value.
public struct AuthCredentials: Sendable, Hashable, CustomStringConvertible {
    /// Headers by lower-cased name (the last one wins when a name repeats).
    public private(set) var headers: [String: String]

    public init(headers: [String: String] = [:]) {
        var lowered: [String: String] = [:]
        for (name, value) in headers { lowered[name.lowercased()] = value }
        self.headers = lowered
    }

    /// The header `name`, whatever its case.
    public subscript(_ name: String) -> String? {
        headers[name.lowercased()]
    }

    /// The token of `Authorization: Bearer <token>` (scheme case-insensitive), if present.
    public var bearerToken: String? {
        guard let value = self["authorization"] else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: " \t")
        return token.isEmpty ? nil : token
    }

    public var description: String {
        "AuthCredentials(\(headers.keys.sorted().joined(separator: ", ")))"
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        var slice = self
        while let first = slice.first, set.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, set.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}
