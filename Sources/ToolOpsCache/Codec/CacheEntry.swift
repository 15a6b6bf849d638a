import ToolOpsCore

/// A cached result with its lifetimes. Times are wall-clock instants (nanoseconds since the
/// Unix epoch, see ``WallClock``) because entries are shared between processes and hosts.
public struct CacheEntry: Sendable, Hashable {
    /// The tool's result (for a negative entry, `.null`).
    public var result: ToolResult
    public var tool: ToolID
    /// Tags for invalidation (the call's tags, lowercased).
    public var tags: Set<String>
    public var storedAt: ClockInstant
    /// Until this instant the entry is served as a hit.
    public var freshUntil: ClockInstant
    /// After ``freshUntil`` and until this instant the entry is kept only to be served,
    /// marked stale, if the tool fails (stale-if-error). Equal to ``freshUntil`` when off.
    public var expiresAt: ClockInstant
    /// For a negative entry (a cached failure): the error's description.
    public var failure: String?

    public init(
        result: ToolResult, tool: ToolID, tags: Set<String> = [], storedAt: ClockInstant,
        freshUntil: ClockInstant, expiresAt: ClockInstant? = nil, failure: String? = nil
    ) {
        self.result = result
        self.tool = tool
        self.tags = tags
        self.storedAt = storedAt
        self.freshUntil = freshUntil
        self.expiresAt = max(expiresAt ?? freshUntil, freshUntil)
        self.failure = failure
    }

    public func isFresh(at now: ClockInstant) -> Bool { now < freshUntil }
    public func isExpired(at now: ClockInstant) -> Bool { now >= expiresAt }
}

/// The binary form of an entry shared by the file and Redis stores: a versioned header
/// with the lifetimes, tool, tags and metadata, then the canonical JSON of the value.
/// Decoding checks every length against the input: truncated or corrupt bytes are a
/// ``ToolOpsError/Code/invalidInput`` error (stores treat it as a miss), never a crash.
public enum CacheEntryCodec {
    static let magic: [UInt8] = Array("TOC1".utf8)

    public static func encode(_ entry: CacheEntry) throws(ToolOpsError) -> [UInt8] {
        try encode(entry, value: entry.result.value.canonicalEncoding())
    }

    /// Encodes with the value's canonical JSON already at hand.
    public static func encode(_ entry: CacheEntry, value: [UInt8]) -> [UInt8] {
        var out = magic
        out.reserveCapacity(value.count + 128)
        out.append(entry.failure == nil ? 0 : 1)
        put64(&out, entry.storedAt.nanoseconds)
        put64(&out, entry.freshUntil.nanoseconds)
        put64(&out, entry.expiresAt.nanoseconds)
        putString(&out, entry.tool.description)
        putString(&out, entry.failure ?? "")
        put32(&out, UInt32(entry.tags.count))
        for tag in entry.tags.sorted() { putString(&out, tag) }
        put32(&out, UInt32(entry.result.metadata.count))
        for (name, value) in entry.result.metadata.sorted(by: { $0.key < $1.key }) {
            putString(&out, name)
            putString(&out, value)
        }
        put32(&out, UInt32(truncatingIfNeeded: value.count))
        out.append(contentsOf: value)
        return out
    }

    /// Only the lifetimes (for eviction scans that need not parse the value).
    public static func lifetimes(_ bytes: [UInt8]) throws(ToolOpsError) -> (freshUntil: ClockInstant, expiresAt: ClockInstant) {
        var reader = Reader(bytes: bytes)
        _ = try reader.header()
        _ = try reader.int64()
        return (ClockInstant(nanoseconds: try reader.int64()), ClockInstant(nanoseconds: try reader.int64()))
    }

    /// The tool and tags, without parsing the value (for invalidation scans).
    public static func header(_ bytes: [UInt8]) throws(ToolOpsError) -> (tool: String, tags: [String]) {
        var reader = Reader(bytes: bytes)
        _ = try reader.header()
        for _ in 0..<3 { _ = try reader.int64() }
        let tool = try reader.string()
        _ = try reader.string()
        var tags: [String] = []
        for _ in 0..<(try reader.count()) { tags.append(try reader.string()) }
        return (tool, tags)
    }

    public static func decode(_ bytes: [UInt8]) throws(ToolOpsError) -> CacheEntry {
        var reader = Reader(bytes: bytes)
        let negative = try reader.header()
        let storedAt = try reader.int64()
        let freshUntil = try reader.int64()
        let expiresAt = try reader.int64()
        let tool = try ToolID(try reader.string())
        let failure = try reader.string()
        var tags: Set<String> = []
        for _ in 0..<(try reader.count()) { tags.insert(try reader.string()) }
        var metadata: [String: String] = [:]
        for _ in 0..<(try reader.count()) {
            let name = try reader.string()
            metadata[name] = try reader.string()
        }
        let value = try reader.slice()
        guard reader.offset == bytes.count else { throw corrupt("trailing bytes") }
        let json = try JSONValue(parsing: Array(value), limits: .init(maximumDepth: 512, maximumBytes: max(value.count, 1)))
        return CacheEntry(
            result: ToolResult(json, metadata: metadata), tool: tool, tags: tags,
            storedAt: ClockInstant(nanoseconds: storedAt), freshUntil: ClockInstant(nanoseconds: freshUntil),
            expiresAt: ClockInstant(nanoseconds: expiresAt), failure: negative ? failure : nil)
    }

    static func corrupt(_ why: String) -> ToolOpsError { ToolOpsError(.invalidInput, "corrupt cache entry: \(why)") }

    private static func put64(_ out: inout [UInt8], _ value: Int64) {
        let bits = UInt64(bitPattern: value)
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
    }

    private static func put32(_ out: inout [UInt8], _ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    private static func putString(_ out: inout [UInt8], _ text: String) {
        put32(&out, UInt32(truncatingIfNeeded: text.utf8.count))
        out.append(contentsOf: text.utf8)
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func header() throws(ToolOpsError) -> Bool {
            guard bytes.count >= 5, Array(bytes[0..<4]) == CacheEntryCodec.magic else { throw corrupt("bad magic") }
            offset = 5
            switch bytes[4] {
            case 0: return false
            case 1: return true
            default: throw corrupt("bad flags")
            }
        }

        mutating func int64() throws(ToolOpsError) -> Int64 {
            guard bytes.count - offset >= 8 else { throw corrupt("truncated") }
            var bits: UInt64 = 0
            for index in offset..<(offset + 8) { bits = bits << 8 | UInt64(bytes[index]) }
            offset += 8
            return Int64(bitPattern: bits)
        }

        mutating func count() throws(ToolOpsError) -> Int {
            guard bytes.count - offset >= 4 else { throw corrupt("truncated") }
            var value = 0
            for index in offset..<(offset + 4) { value = value << 8 | Int(bytes[index]) }
            offset += 4
            // Every counted item takes at least 4 bytes: a count beyond that is corrupt.
            guard value <= (bytes.count - offset) else { throw corrupt("count beyond the input") }
            return value
        }

        mutating func slice() throws(ToolOpsError) -> ArraySlice<UInt8> {
            let length = try count()
            defer { offset += length }
            return bytes[offset..<(offset + length)]
        }

        mutating func string() throws(ToolOpsError) -> String {
            let slice = try self.slice()
            guard let text = String(validating: slice, as: UTF8.self) else { throw corrupt("invalid UTF-8") }
            return text
        }
    }
}
