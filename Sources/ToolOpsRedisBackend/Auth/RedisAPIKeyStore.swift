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
        return try APIKeyRecord(canonicalJSON: bytes)
    }

    public func put(_ record: APIKeyRecord) async throws {
        var commands = [RedisCommand("SET", keys.apiKey(record.lookupID), try record.canonicalJSON())]
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
}
