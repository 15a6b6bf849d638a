import ToolOpsCore
import ToolOpsRedis
import ToolOpsResilience

/// A bulkhead shared by every replica: a sorted set of leases per bulkhead (member = a random
/// lease id chosen by the acquiring replica, score = expiry in Redis time). Expired leases —
/// those of a crashed replica — are dropped before each admission, and a release removes only
/// its own id, so a late or duplicate release can never free somebody else's slot. An
/// acquisition whose answer is lost (cancelled, timed out, connection dropped) releases its id,
/// in case the script granted it.
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

    /// KEYS: leases. ARGV: limit, lease (ms), lease id. Returns 1 when the lease was granted,
    /// 0 when the bulkhead is full.
    public static let acquireScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return 1
        """)

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        let leaseMs = max(1, lease.nanosecondsClamped / 1_000_000)
        let deadline = clock.now + maxWait
        var pause = Duration.milliseconds(1)
        while true {
            // The lease id is ours, not the script's: when the answer is lost (the caller was
            // cancelled — e.g. by the fallback's deadline —, the command timed out, the connection
            // dropped after the write) the script may still have granted the lease, and knowing
            // its id lets us take it back instead of stranding the slot for a whole lease.
            let token = Self.newLeaseID()
            let reply: RESPValue
            do {
                reply = try await client.run(
                    Self.acquireScript, keys: [keys.bulkheadLeases(key)], arguments: [limit, leaseMs, String(token)])
            } catch {
                if (error as? RedisClientError)?.code != .serverError { releaseDetached(BulkheadPermit(key: key, token: token)) }
                if let error = error as? RedisClientError, error.isUnavailable {
                    throw ToolOpsError(.storeUnavailable, "Redis unavailable for bulkhead \(key)", underlying: error)
                }
                throw error
            }
            guard let granted = reply.int else { throw RedisClientError(.unexpectedReply, "bulkhead script returned \(reply)") }
            if granted == 1 { return BulkheadPermit(key: key, token: token) }
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
        await releaseDetached(permit).value
    }

    @discardableResult
    private func releaseDetached(_ permit: BulkheadPermit) -> Task<Void, Never> {
        let client = self.client
        let key = keys.bulkheadLeases(permit.key)
        return Task.detached { _ = try? await client.send("ZREM", key, String(permit.token)) }
    }

    /// A random lease id: unique in practice (62 bits), never 0, and clear of the top bit the
    /// fallback wrapper uses to tag local permits.
    static func newLeaseID() -> UInt64 { UInt64.random(in: 1...(UInt64(1) << 62)) }
}
