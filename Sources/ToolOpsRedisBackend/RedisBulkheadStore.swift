import ToolOpsCore
import ToolOpsRedis
import ToolOpsResilience

/// A bulkhead shared by every replica: a sorted set of leases per bulkhead (member = a
/// fencing token from a counter, score = expiry in Redis time). Expired leases — those of a
/// crashed replica — are dropped before each admission, and a release removes only its own
/// token, so a late or duplicate release can never free somebody else's slot.
///
/// Waiting callers poll (1 ms doubling to 25 ms) until `maxWait`.
public final class RedisBulkheadStore: BulkheadStore {
    public let client: RedisClient
    public let keys: RedisKeySchema
    let clock: any ToolOpsClock

    public init(client: RedisClient, keys: RedisKeySchema = .init(), clock: any ToolOpsClock = SystemClock()) {
        self.client = client
        self.keys = keys
        self.clock = clock
    }

    /// KEYS: leases, sequence. ARGV: limit, lease (ms). Returns the new token, or 0 when full.
    public static let acquireScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
        local token = redis.call('INCR', KEYS[2])
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), token)
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return token
        """)

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        let leaseMs = max(1, lease.nanosecondsClamped / 1_000_000)
        let deadline = clock.now + maxWait
        var pause = Duration.milliseconds(1)
        while true {
            let reply: RESPValue
            do {
                reply = try await client.run(
                    Self.acquireScript, keys: [keys.bulkheadLeases(key), keys.bulkheadSequence(key)], arguments: [limit, leaseMs])
            } catch let error as RedisClientError where error.isUnavailable {
                throw ToolOpsError(.storeUnavailable, "Redis unavailable for bulkhead \(key)", underlying: error)
            }
            guard let token = reply.int else { throw RedisClientError(.unexpectedReply, "bulkhead script returned \(reply)") }
            if token > 0 { return BulkheadPermit(key: key, token: UInt64(token)) }
            let now = clock.now
            if now >= deadline { throw ToolOpsError(.bulkheadFull, "bulkhead \(key) is full (\(limit) in use across replicas)") }
            try await clock.sleep(until: min(deadline, now + pause))
            pause = min(pause * 2, .milliseconds(25))
        }
    }

    public func release(_ permit: BulkheadPermit) async {
        // Released from a task of its own: a cancelled caller (the usual reason to release
        // early) must not cancel the ZREM and strand the slot for a whole lease. If Redis is
        // unreachable the lease simply expires.
        let client = self.client
        let key = keys.bulkheadLeases(permit.key)
        await Task.detached { _ = try? await client.send("ZREM", key, String(permit.token)) }.value
    }
}
