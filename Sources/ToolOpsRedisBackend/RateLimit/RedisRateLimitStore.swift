import Synchronization
import ToolOpsCore
import ToolOpsRedis
import ToolOpsResilience

/// Rate limits shared by every replica: GCRA in one Lua script, one round trip per decision
/// (however many limits the call is subject to), time from Redis' `TIME`, so replica clocks
/// never matter.
///
/// ```swift
/// let store = RedisRateLimitStore(client: redis)
/// let limiter = try RateLimitMiddleware(.init(rules: rules), store: FallbackRateLimitStore(primary: store))
/// ```
///
/// Errors: an unreachable Redis becomes `ToolOpsError(.storeUnavailable)` (the fallback
/// wrapper acts on it); an error reply from Redis is rethrown as the `RedisClientError`.
public final class RedisRateLimitStore: RateLimitStore {
    public let client: RedisClient
    public let keys: RedisKeySchema

    public init(client: RedisClient, keys: RedisKeySchema = .init()) {
        self.client = client
        self.keys = keys
    }

    /// KEYS: the buckets. ARGV[1]: the longest acceptable wait (µs); then per bucket its
    /// cost, emission interval (µs) and burst. Returns `accepted, wait` and per bucket
    /// `remaining, retryAfter, resetAfter` (µs). All or nothing: refused batches write nothing.
    /// Each bucket key expires when its bucket is full again. (Numbers are passed to `SET`
    /// as Lua numbers: Redis writes them at full precision, and `string.format` would cost
    /// a third of the script's time.)
    public static let script = RedisScript(
        """
        local t = redis.call('TIME')
        local now = t[1] * 1000000 + t[2]
        local maxWait = tonumber(ARGV[1])
        local n = #KEYS
        if n == 1 then
          local cost, interval, burst = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
          local tolerance = burst * interval
          local tat = tonumber(redis.call('GET', KEYS[1])) or now
          if tat < now then tat = now end
          local newTat = tat + cost * interval
          local wait = newTat - tolerance - now
          if wait <= 0 or wait <= maxWait then
            local ttl = newTat - now
            redis.call('SET', KEYS[1], newTat, 'PX', math.ceil(ttl / 1000) + 1)
            return {1, wait > 0 and math.ceil(wait) or 0, math.max(0, math.floor((tolerance - ttl) / interval)), 0, math.ceil(ttl)}
          end
          return {0, math.ceil(wait), math.max(0, math.floor((tolerance - (tat - now)) / interval)), math.ceil(wait), math.ceil(tat - now)}
        end
        local tats, newTats, waits = {}, {}, {}
        local worst = nil
        for i = 1, n do
          local cost, interval, burst = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
          local tat = nil
          for j = 1, i - 1 do if KEYS[j] == KEYS[i] then tat = newTats[j] end end
          if tat == nil then tat = tonumber(redis.call('GET', KEYS[i])) or now end
          if tat < now then tat = now end
          tats[i] = tat
          newTats[i] = tat + cost * interval
          waits[i] = newTats[i] - burst * interval - now
          if worst == nil or waits[i] > worst then worst = waits[i] end
        end
        local accepted = worst <= 0 or worst <= maxWait
        local out = {accepted and 1 or 0, math.max(0, math.ceil(worst))}
        for i = 1, n do
          local interval, burst = tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
          if accepted then
            redis.call('SET', KEYS[i], newTats[i], 'PX', math.ceil((newTats[i] - now) / 1000) + 1)
            out[#out+1] = math.max(0, math.floor((burst * interval - (newTats[i] - now)) / interval))
            out[#out+1] = 0
            out[#out+1] = math.ceil(newTats[i] - now)
          else
            out[#out+1] = math.max(0, math.floor((burst * interval - (tats[i] - now)) / interval))
            out[#out+1] = math.max(0, math.ceil(waits[i]))
            out[#out+1] = math.ceil(tats[i] - now)
          end
        end
        return out
        """)

    /// Encoded commands by request: a bucket is asked the same question over and over, and
    /// encoding (≈2 µs) would otherwise be a large share of our CPU per decision.
    private let encoded = Mutex<[CommandKey: RedisCommand]>([:])

    struct CommandKey: Hashable {
        var requests: [RateLimitRequest]
        var maxWait: Duration
    }

    func command(for requests: [RateLimitRequest], maxWait: Duration) -> RedisCommand {
        let key = CommandKey(requests: requests, maxWait: maxWait)
        if let command = encoded.withLock({ $0[key] }) { return command }
        let command = makeCommand(requests, maxWait: maxWait)
        encoded.withLock { cache in
            if cache.count >= 10_000 { cache.removeAll() }  // bounded: keys may come from callers
            cache[key] = command
        }
        return command
    }

    private func makeCommand(_ requests: [RateLimitRequest], maxWait: Duration) -> RedisCommand {
        var arguments: [any RedisArgumentConvertible] = [maxWait.nanosecondsClamped / 1000]
        arguments.reserveCapacity(1 + requests.count * 3)
        for request in requests {
            // Intervals are sent in µs with fractions: 1e9/s fits, and Lua numbers are doubles.
            arguments.append(request.cost)
            arguments.append(Double(request.limit.emissionInterval) / 1000)
            arguments.append(request.limit.burst)
        }
        return .evalSHA(Self.script, keys: requests.map { keys.rateLimit($0.key) }, arguments: arguments)
    }

    public func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        if requests.isEmpty { return [] }
        let reply: RESPValue
        do {
            reply = try await client.send(command(for: requests, maxWait: maxWait))
        } catch let error as RedisClientError where error.isUnavailable {
            throw ToolOpsError(.storeUnavailable, "Redis unavailable for rate limiting", underlying: error)
        }
        guard let values = reply.array?.compactMap(\.int), values.count == 2 + requests.count * 3 else {
            throw RedisClientError(.unexpectedReply, "rate-limit script returned \(reply)")
        }
        let accepted = values[0] == 1
        let wait = Duration.microseconds(values[1])
        return requests.enumerated().map { index, request in
            let base = 2 + index * 3
            return RateLimitDecision(
                allowed: accepted, limit: request.limit.burst, remaining: Int(values[base]),
                retryAfter: .microseconds(values[base + 1]), resetAfter: .microseconds(values[base + 2]),
                wait: accepted ? wait : .zero)
        }
    }
}
