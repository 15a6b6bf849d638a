import Synchronization
import ToolOpsAuth
import ToolOpsCore
import ToolOpsRedis

/// API keys in Redis, shared by every replica; changes and revocations are announced on a
/// channel so every replica's ``APIKeyAuthenticator`` drops its cached verdict at once.
///
/// - `<prefix>:ak:{<lookup id>}`: the record as canonical JSON (the digest in hex; never the
///   key), expiring with the key. `<prefix>:akid:{<id>}`: the lookup id, to revoke by id.
/// - `<prefix>:ak:events`: the lookup id of every record written or revoked.
///
/// ``run()`` follows the channel (``RedisBackend`` runs it). While the channel is down —
/// Redis unreachable, or the subscription lost — a change could be missed, so every cached
/// verdict is dropped when it is lost and again when it comes back; verified keys are then
/// asked of Redis again (and, while Redis is down, refused as `providerUnavailable` unless
/// still cached: the degraded mode is "known keys keep working until their cache TTL, unknown
/// keys are refused").
public final class RedisAPIKeyStore: APIKeyStore, APIKeyChangeSource {
    let client: RedisClient
    let keys: RedisKeySchema
    private let handlers = Mutex<[@Sendable (String?) -> Void]>([])
    private let handle = Mutex<RedisSubscriptionHandle?>(nil)

    public init(client: RedisClient, keys: RedisKeySchema = .init()) {
        self.client = client
        self.keys = keys
    }

    public func record(lookupID: String) async throws -> APIKeyRecord? {
        guard case .bulkString(let bytes) = try await client.send("GET", keys.apiKey(lookupID)) else { return nil }
        return try Self.decode(bytes)
    }

    public func put(_ record: APIKeyRecord) async throws {
        var commands = [RedisCommand("SET", keys.apiKey(record.lookupID), try Self.encode(record))]
        if let expiry = record.expiresAt {
            let milliseconds = max(1, expiry.nanoseconds / 1_000_000)
            commands.append(RedisCommand("PEXPIREAT", keys.apiKey(record.lookupID), milliseconds))
        }
        commands.append(RedisCommand("SET", keys.apiKeyID(record.id), record.lookupID))
        commands.append(RedisCommand("PUBLISH", keys.apiKeyEvents, record.lookupID))
        for result in try await client.pipeline(commands) { _ = try result.get() }
    }

    @discardableResult
    public func revoke(id: String) async throws -> Bool {
        guard case .bulkString(let bytes) = try await client.send("GET", keys.apiKeyID(id)) else { return false }
        let lookupID = String(decoding: bytes, as: UTF8.self)
        let results = try await client.pipeline([
            RedisCommand("DEL", keys.apiKey(lookupID)), RedisCommand("DEL", keys.apiKeyID(id)), RedisCommand("PUBLISH", keys.apiKeyEvents, lookupID),
        ])
        if case .integer(let removed) = try results[0].get() { return removed > 0 }
        return false
    }

    public func onChange(_ handler: @escaping @Sendable (String?) -> Void) {
        handlers.withLock { $0.append(handler) }
    }

    private func notify(_ lookupID: String?) {
        for handler in handlers.withLock({ $0 }) { handler(lookupID) }
    }

    // MARK: channel

    /// Follows the change channel until graceful shutdown; never throws. ``RedisBackend`` runs it.
    public func run() async throws {
        await followChannel(client: client, subscribe: { try await self.start() }, unsubscribe: { self.stop() })
    }

    package func start() async throws {
        let subscription = try await client.subscribe(to: [keys.apiKeyEvents]) { [weak self] event in self?.handle(event) }
        handle.withLock { $0 = subscription }
        // Anything changed before the subscription was confirmed may have been missed.
        notify(nil)
    }

    package func stop() {
        handle.withLock { $0 }?.cancel()
        notify(nil)
    }

    func handle(_ event: RedisPubSubEvent) {
        switch event {
        case .message(let message): notify(message.text)
        case .connectionLost, .restored: notify(nil)
        }
    }

    // MARK: encoding

    static func encode(_ record: APIKeyRecord) throws -> String {
        var object: [String: JSONValue] = [
            "id": .string(record.id), "digest": .string(hex(record.digest)), "principal": .string(record.principal),
            "roles": .array(record.roles.map(JSONValue.string)), "scopes": .array(record.scopes.map(JSONValue.string)),
            "metadata": .object(record.metadata.mapValues(JSONValue.string)),
        ]
        if let tenant = record.tenant { object["tenant"] = .string(tenant) }
        if let expiry = record.expiresAt { object["expiresAt"] = .integer(expiry.nanoseconds) }
        return try JSONValue.object(object).canonicalString()
    }

    /// A stored record; anything else (a corrupt or foreign value) is a store failure, not a key.
    static func decode(_ bytes: [UInt8]) throws -> APIKeyRecord {
        let json = try JSONValue(parsing: bytes, limits: .init(maximumDepth: 4, maximumBytes: 64 * 1024))
        guard let id = json["id"]?.stringValue, let principal = json["principal"]?.stringValue,
            let digest = json["digest"]?.stringValue.flatMap(unhex), digest.count == 32
        else { throw ToolOpsError(.storeUnavailable, "an API-key record in Redis is not readable") }
        func strings(_ key: String) -> [String] {
            guard case .array(let values)? = json[key] else { return [] }
            return values.compactMap(\.stringValue)
        }
        var metadata: [String: String] = [:]
        if case .object(let members)? = json["metadata"] {
            for (key, value) in members { if let text = value.stringValue { metadata[key] = text } }
        }
        return APIKeyRecord(
            id: id, digest: digest, principal: principal, tenant: json["tenant"]?.stringValue, roles: strings("roles"), scopes: strings("scopes"),
            expiresAt: json["expiresAt"]?.int64Value.map(ClockInstant.init(nanoseconds:)), metadata: metadata)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }

    static func unhex(_ text: String) -> [UInt8]? {
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
}
