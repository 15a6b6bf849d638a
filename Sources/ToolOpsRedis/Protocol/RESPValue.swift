/// A RESP2 reply from Redis, binary-safe.
///
/// ```swift
/// let reply = try await client.send("GET", "greeting")
/// if case .bulkString(let bytes) = reply { print(String(decoding: bytes, as: UTF8.self)) }
/// ```
public enum RESPValue: Sendable, Hashable {
    /// A status reply such as `+OK` or `+PONG`.
    case simpleString(String)
    /// An error reply nested inside an array (for example from `EXEC` or a Lua table).
    /// Top-level error replies are thrown as ``RedisClientError`` with code ``RedisClientError/Code/serverError``.
    case error(String)
    /// An integer reply.
    case integer(Int64)
    /// A bulk string: arbitrary bytes, possibly empty.
    case bulkString([UInt8])
    /// The null bulk string or null array.
    case null
    /// An array of replies.
    case array([RESPValue])
}

extension RESPValue {
    /// The value as text: bulk strings decoded as UTF-8, simple strings as is, integers in decimal.
    public var string: String? {
        switch self {
        case .bulkString(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .simpleString(let s): return s
        case .integer(let i): return String(i)
        default: return nil
        }
    }

    /// The raw bytes of a bulk or simple string.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): return bytes
        case .simpleString(let s): return Array(s.utf8)
        default: return nil
        }
    }

    /// The value as an integer: integer replies, and bulk strings holding a decimal integer.
    public var int: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulkString(let bytes): return Int64(String(decoding: bytes, as: UTF8.self))
        case .simpleString(let s): return Int64(s)
        default: return nil
        }
    }

    /// The elements of an array reply.
    public var array: [RESPValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    /// `true` for the null reply.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension RESPValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .simpleString(let s): return "+\(s)"
        case .error(let e): return "-\(e)"
        case .integer(let i): return ":\(i)"
        case .null: return "(nil)"
        case .bulkString(let bytes):
            if let s = String(validating: bytes, as: UTF8.self) { return "\"\(s)\"" }
            return "<\(bytes.count) bytes>"
        case .array(let values): return "[" + values.map(\.description).joined(separator: ", ") + "]"
        }
    }
}
