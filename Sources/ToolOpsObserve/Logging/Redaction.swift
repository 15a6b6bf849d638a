import Logging
import ToolOpsCore

/// Which keys hide their values in log metadata and logged arguments, at any depth.
///
/// A key is secret when, lower-cased and with `-` read as `_`, it *contains* one of
/// ``keys``: `password` also hides `db_password` and `X-Password`, `token` also hides
/// `access_token` and `refresh-token`. Matching by containment errs towards hiding: a key
/// named `tokens_used` is hidden too, which is the safe mistake.
///
/// ```swift
/// let redaction = Redaction(adding: ["ssn"])
/// redaction.redact(.object(["user": .object(["Password": "hunter2"])]))  // ["user": ["Password": "[REDACTED]"]]
/// ```
public struct Redaction: Sendable, Hashable {
    /// The defaults: `password`, `passwd`, `secret`, `token`, `api_key`, `apikey`,
    /// `authorization`, `cookie`, `credential`, `private_key`.
    public static let defaultKeys: Set<String> = [
        "password", "passwd", "secret", "token", "api_key", "apikey", "authorization", "cookie", "credential", "private_key",
    ]

    /// What a hidden value is replaced with.
    public static let placeholder = "[REDACTED]"

    /// The key fragments that mark a value secret (stored normalised).
    public let keys: [String]
    /// The same, as bytes: matched without allocating (log lines are on the hot path).
    let fragments: [[UInt8]]
    /// For each byte, whether some fragment starts with it: most positions of a key are
    /// rejected by one table lookup.
    let startsFragment: [Bool]

    /// Redacts `keys` (defaults to ``defaultKeys``).
    public init(keys: Set<String> = Redaction.defaultKeys) {
        self.keys = keys.map(Self.normalised).filter { !$0.isEmpty }.sorted()
        self.fragments = self.keys.map { Array($0.utf8) }
        var starts = [Bool](repeating: false, count: 256)
        for fragment in fragments { if let first = fragment.first { starts[Int(first)] = true } }
        self.startsFragment = starts
    }

    /// Redacts the defaults and `extra`.
    public init(adding extra: Set<String>) {
        self.init(keys: Self.defaultKeys.union(extra))
    }

    /// Whether a value under `key` is hidden.
    public func isSecret(_ key: String) -> Bool {
        var key = key
        return key.withUTF8 { bytes in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: bytes.count) { folded in
                for index in bytes.indices { folded[index] = Self.fold(bytes[index]) }
                let haystack = UnsafeBufferPointer(folded)
                for start in haystack.indices where startsFragment[Int(haystack[start])] {
                    for fragment in fragments where fragment[0] == haystack[start] && Self.matches(haystack, at: start, fragment) {
                        return true
                    }
                }
                return false
            }
        }
    }

    /// ASCII lower case, `-` as `_` (non-ASCII bytes are left alone: they never match).
    static func fold(_ byte: UInt8) -> UInt8 {
        if byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") { return byte | 0x20 }
        return byte == UInt8(ascii: "-") ? UInt8(ascii: "_") : byte
    }

    static func matches(_ haystack: UnsafeBufferPointer<UInt8>, at start: Int, _ needle: [UInt8]) -> Bool {
        guard start + needle.count <= haystack.count else { return false }
        for offset in needle.indices where haystack[start + offset] != needle[offset] { return false }
        return true
    }

    /// `value` with every secret key's value replaced, at any depth.
    public func redact(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let members):
            var out: [String: JSONValue] = [:]
            out.reserveCapacity(members.count)
            for (key, member) in members { out[key] = isSecret(key) ? .string(Self.placeholder) : redact(member) }
            return .object(out)
        case .array(let elements):
            return .array(elements.map(redact))
        default:
            return value
        }
    }

    /// `metadata` with every secret key's value replaced, at any depth.
    public func redact(_ metadata: Logger.Metadata) -> Logger.Metadata {
        var out: Logger.Metadata = [:]
        out.reserveCapacity(metadata.count)
        for (key, value) in metadata { out[key] = isSecret(key) ? .string(Self.placeholder) : redact(value) }
        return out
    }

    /// `value` with every secret key's value replaced, at any depth.
    public func redact(_ value: Logger.MetadataValue) -> Logger.MetadataValue {
        switch value {
        case .dictionary(let members): return .dictionary(redact(members))
        case .array(let elements): return .array(elements.map(redact))
        case .string, .stringConvertible: return value
        }
    }

    static func normalised(_ key: String) -> String {
        String(decoding: key.utf8.map(fold), as: UTF8.self)
    }
}
