import ToolOpsCore
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsResilience

/// The cluster's replica registry in Redis: a sorted set of replica ids scored by the expiry of
/// their registration (Redis time, so replica clocks never matter) and a hash of what each
/// reported. Every script first drops expired replicas, and both keys expire with the last
/// registration, so a registry whose replicas are all gone disappears by itself.
///
/// Redis restarts lose the registry only until each replica's next heartbeat.
public final class RedisMembershipStore: MembershipStore {
    public let client: RedisClient
    public let keys: RedisKeySchema

    public init(client: RedisClient, keys: RedisKeySchema = .init()) {
        self.client = client
        self.keys = keys
    }

    /// The common prelude: `now` in ms from Redis, expired replicas removed.
    static let prune = """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
        if #expired > 0 then
          redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
          redis.call('HDEL', KEYS[2], unpack(expired))
        end
        """

    /// KEYS: index, info. ARGV: id, ttl (ms), record. Returns the expiry (ms, Redis time).
    public static let registerScript = RedisScript(
        prune + """

            local expires = now + tonumber(ARGV[2])
            redis.call('ZADD', KEYS[1], expires, ARGV[1])
            redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
            local last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
            redis.call('PEXPIREAT', KEYS[1], last)
            redis.call('PEXPIREAT', KEYS[2], last)
            return expires
            """)

    /// KEYS: index, info. ARGV: id.
    public static let deregisterScript = RedisScript(
        """
        redis.call('ZREM', KEYS[1], ARGV[1])
        return redis.call('HDEL', KEYS[2], ARGV[1])
        """)

    /// KEYS: index, info. Returns `[id, record, id, record, …]` of the live replicas.
    public static let membersScript = RedisScript(
        prune + """

            local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
            if #ids == 0 then return {} end
            local records = redis.call('HMGET', KEYS[2], unpack(ids))
            local out = {}
            for i, id in ipairs(ids) do
              if records[i] then
                out[#out + 1] = id
                out[#out + 1] = records[i]
              end
            end
            return out
            """)

    public func register(_ replica: ReplicaInfo, ttl: Duration) async throws {
        let ttlMs = ttl.nanosecondsClamped / 1_000_000
        guard ttlMs >= 1 else { throw ToolOpsError(.invalidInput, "registration ttl must be at least 1 ms") }
        _ = try await run(Self.registerScript, [replica.id, ttlMs, replica.encoded()])
    }

    public func deregister(id: String) async throws {
        _ = try await run(Self.deregisterScript, [id])
    }

    public func members() async throws -> [ReplicaInfo] {
        let reply = try await run(Self.membersScript, [])
        guard let values = reply.array, values.count % 2 == 0 else {
            throw RedisClientError(.unexpectedReply, "members script returned \(reply)")
        }
        var replicas: [ReplicaInfo] = []
        for index in stride(from: 0, to: values.count, by: 2) {
            // A record another version wrote in a shape we cannot read is skipped, not fatal.
            if let bytes = values[index + 1].bytes, let replica = try? ReplicaInfo(decoding: bytes) { replicas.append(replica) }
        }
        return replicas.sorted { $0.id < $1.id }
    }

    func run(_ script: RedisScript, _ arguments: [any RedisArgumentConvertible]) async throws -> RESPValue {
        do {
            return try await client.run(script, keys: [keys.membersIndex, keys.membersInfo], arguments: arguments)
        } catch let error as RedisClientError where error.isUnavailable {
            throw ToolOpsError(.storeUnavailable, "Redis unavailable for the replica registry", underlying: error)
        }
    }
}
