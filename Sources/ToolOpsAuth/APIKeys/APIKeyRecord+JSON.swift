import ToolOpsCore

extension APIKeyRecord {
    /// The record as canonical JSON, as the file and Redis stores keep it: the digest in hex,
    /// never the key.
    public func canonicalJSON() throws(ToolOpsError) -> [UInt8] {
        var object: [String: JSONValue] = [
            "id": .string(id), "digest": .string(Self.hex(digest)), "principal": .string(principal),
            "roles": .array(roles.map(JSONValue.string)), "scopes": .array(scopes.map(JSONValue.string)),
            "metadata": .object(metadata.mapValues(JSONValue.string)),
        ]
        if let tenant { object["tenant"] = .string(tenant) }
        if let expiresAt { object["expiresAt"] = .integer(expiresAt.nanoseconds) }
        return try JSONValue.object(object).canonicalEncoding()
    }

    /// A stored record; anything else (corrupt, foreign, truncated) is a store failure.
    public init(canonicalJSON bytes: [UInt8]) throws(ToolOpsError) {
        let json: JSONValue
        do {
            json = try JSONValue(parsing: bytes, limits: .init(maximumDepth: 4, maximumBytes: 64 * 1024))
        } catch {
            throw ToolOpsError(.storeUnavailable, "an API-key record is not readable")
        }
        guard let id = json["id"]?.stringValue, let principal = json["principal"]?.stringValue,
            let digest = json["digest"]?.stringValue.flatMap(Self.unhex), digest.count == 32
        else { throw ToolOpsError(.storeUnavailable, "an API-key record is not readable") }
        func strings(_ key: String) -> [String] {
            guard case .array(let values)? = json[key] else { return [] }
            return values.compactMap(\.stringValue)
        }
        var metadata: [String: String] = [:]
        if case .object(let members)? = json["metadata"] {
            for (key, value) in members { if let text = value.stringValue { metadata[key] = text } }
        }
        self.init(
            id: id, digest: digest, principal: principal, tenant: json["tenant"]?.stringValue, roles: strings("roles"), scopes: strings("scopes"),
            expiresAt: json["expiresAt"]?.int64Value.map(ClockInstant.init(nanoseconds:)), metadata: metadata)
    }

    /// Lower-case hex of `bytes` (digests, lookup ids, token hashes).
    package static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }

    /// The bytes of lower-case hex text; `nil` for anything else.
    package static func unhex(_ text: String) -> [UInt8]? {
        let bytes = Array(text.utf8)
        guard bytes.count % 2 == 0 else { return nil }
        func value(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count / 2)
        for index in stride(from: 0, to: bytes.count, by: 2) {
            guard let high = value(bytes[index]), let low = value(bytes[index + 1]) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }

    /// Whether `text` can be a lookup id (lower-case hex): anything else never names a record,
    /// nor a file.
    static func isLookupID(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 64 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}
