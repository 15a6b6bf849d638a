import ServiceLifecycle
import Synchronization
import ToolOpsCore
import ToolOpsRedis
import ToolOpsResilience

/// Rate limits shared by every replica: GCRA in one Lua script, one round trip per decision
/// (however many limits the call is subject to), time from Redis' `TIME`, so replica clocks
/// never matter.
///
/// Busy buckets are leased (see ``Leasing``): a call on a bucket whose rate puts several
/// tokens in a 20 ms window takes a batch of tokens sized to this replica's recent demand in
/// one round trip, and the next calls spend them without one; a refusal is remembered until
/// its `retryAfter`. The cluster still never admits more than the limit — every call spent a
/// token taken from the shared bucket — and slow buckets (under 2 tokens a window, such as
/// 100/s) are decided by Redis call by call. While ``run()`` runs, the next batch is fetched
/// ahead of need (when half of a batch or of its window is left: a round trip under load
/// can take longer than the last quarter lasts), so calls on a busy
/// bucket do not wait for a round trip at all.
///
/// ```swift
/// let store = RedisRateLimitStore(client: redis)
/// let limiter = try RateLimitMiddleware(.init(rules: rules), store: FallbackRateLimitStore(primary: store))
/// ```
///
/// Errors: an unreachable Redis becomes `ToolOpsError(.storeUnavailable)` (the fallback
/// wrapper acts on it); an error reply from Redis is rethrown as the `RedisClientError`.
public final class RedisRateLimitStore: LocallyDecidingRateLimitStore, Service {
    public let client: RedisClient
    public let keys: RedisKeySchema

    /// How busy buckets are leased.
    public struct Leasing: Sendable {
        /// How long a batch of leased tokens may be spent; unspent tokens are dropped after it.
        /// A bucket is leased when one window holds at least two of its tokens (and its burst
        /// at least eight): batches are at most the tokens of one window and a quarter of the
        /// burst. `.zero` turns leasing off. Defaults to 20 ms.
        public var window: Duration
        /// Buckets whose leases and refusals are kept at most (bucket keys may come from
        /// callers); calls on others go to Redis. Defaults to 10,000.
        public var maximumBuckets: Int

        public init(window: Duration = .milliseconds(20), maximumBuckets: Int = 10_000) {
            self.window = window
            self.maximumBuckets = maximumBuckets
        }

        /// No leasing: every decision is a round trip (refusals are still remembered).
        public static let off = Leasing(window: .zero)
    }

    /// How a call subject to several limits whose buckets lie in different Redis Cluster
    /// slots is decided.
    public enum SlotMode: Sendable, Hashable {
        /// One script over every bucket (one Redis server: every key is reachable from one script).
        case singleScript
        /// One script per slot, pipelined (a cluster refuses a script whose keys span slots):
        /// each slot's buckets reserve their tokens all or nothing, and when any slot refuses,
        /// the others' reservations are refunded. All or nothing still holds for the call —
        /// never more admitted than the limits allow; between reservation and refund, other
        /// calls may see those tokens taken (they are refused, never over-admitted).
        case perSlot
    }

    typealias Waiter = CheckedContinuation<RateLimitLeaseOutcome, Never>
    /// See ``SlotMode``.
    public let slotMode: SlotMode
    private let leases: Mutex<RateLimitLeases<Waiter>>
    private let clock: any ToolOpsClock

    /// A batch asked for ahead of need, fetched by ``run()``.
    struct Refill: Sendable {
        var key: String
        var limit: RateLimit
        var want: Int
    }

    /// Refills waiting for ``run()``: at most one per bucket is in flight (the bucket counts as
    /// fetching until it ends), so the buffer is bounded by the buckets.
    private let refills = AsyncStream<Refill>.makeStream()

    /// - Parameters:
    ///   - leasing: how busy buckets are leased; defaults to ``Leasing/init(window:maximumBuckets:)``.
    ///   - clock: measures lease windows and remembered refusals.
    ///   - slotMode: how a call's buckets in several cluster slots are decided; defaults to
    ///     ``SlotMode/perSlot`` for a client on a Redis Cluster, else ``SlotMode/singleScript``.
    public init(
        client: RedisClient, keys: RedisKeySchema = .init(), leasing: Leasing = .init(), clock: any ToolOpsClock = SystemClock(),
        slotMode: SlotMode? = nil
    ) {
        self.slotMode = slotMode ?? (client.configuration.topology.isCluster ? .perSlot : .singleScript)
        self.client = client
        self.keys = keys
        self.leases = Mutex(RateLimitLeases(configuration: .init(window: leasing.window, maximumBuckets: max(leasing.maximumBuckets, 0))))
        self.clock = clock
    }

    /// KEYS: one bucket. ARGV: cost, emission interval (µs), burst, and the tokens wanted
    /// (≥ cost). Takes as many tokens as wanted and available, at least `cost`, and returns
    /// `taken, remaining, retryAfter, resetAfter` (µs); `taken` is 0 when not even `cost`
    /// tokens are available (nothing written).
    public static let leaseScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = t[1] * 1000000 + t[2]
        local cost, interval, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
        local tolerance = burst * interval
        local tat = tonumber(redis.call('GET', KEYS[1])) or now
        if tat < now then tat = now end
        local available = math.floor((tolerance - (tat - now)) / interval)
        if available < cost then
          return {0, math.max(0, available), math.ceil(tat + cost * interval - tolerance - now), math.ceil(tat - now)}
        end
        local take = math.min(want, available)
        local newTat = tat + take * interval
        redis.call('SET', KEYS[1], newTat, 'PX', math.ceil((newTat - now) / 1000) + 1)
        return {take, available - take, 0, math.ceil(newTat - now)}
        """)

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
        if requests.count == 1 && maxWait == .zero { return [try await leased(requests[0])] }
        return try await decide(requests, maxWait: maxWait)
    }

    /// A decision from leased tokens or a remembered refusal, when there is one (no I/O).
    package func decideLocally(_ request: RateLimitRequest) -> RateLimitDecision? {
        let now = clock.now
        guard let (decision, refill) = leases.withLock({ $0.takeIfDecided(request.key, cost: request.cost, limit: request.limit, now: now) })
        else { return nil }
        if let refill { requestRefill(Refill(key: request.key, limit: request.limit, want: refill)) }
        return decision
    }

    /// Fetches the batches asked for ahead of need, until graceful shutdown or cancellation.
    /// Without it, a bucket's next batch is fetched when it runs out, by the call that finds
    /// it empty (the others wait for it).
    public func run() async {
        leases.withLock { $0.refillsAhead = true }
        let (requests, continuation) = refills
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await refill in requests {
                    group.addTask { await self.fetchRefill(refill) }
                }
            }
        } onGracefulShutdown: {
            continuation.finish()
        }
        // Refills asked for but never fetched (cancelled): their buckets stop waiting for them.
        let waiters = leases.withLock { leases in
            leases.refillsAhead = false
            return leases.endRefills()
        }
        for (waiter, outcome) in waiters { waiter.resume(returning: outcome) }
    }

    private func requestRefill(_ refill: Refill) {
        if case .terminated = refills.continuation.yield(refill) {
            let waiters = leases.withLock { $0.refillEnded(refill.key) }
            for (waiter, outcome) in waiters { waiter.resume(returning: outcome) }
        }
    }

    /// One refill: at least one token and up to `want`; the tokens join those still held.
    private func fetchRefill(_ refill: Refill) async {
        let waiters: [(Waiter, RateLimitLeaseOutcome)]
        if let values = try? await lease(refill.key, limit: refill.limit, cost: 1, want: refill.want), values[0] > 0 {
            waiters = leases.withLock {
                $0.refilled(refill.key, taken: values[0], remaining: values[1], resetAfter: .microseconds(values[3]), now: clock.now)
            }
        } else {
            // Refused, failed or unreadable: the calls that need tokens fetch their own and
            // learn why (a refusal is then remembered, an unreachable Redis reaches the fallback).
            waiters = leases.withLock { $0.refillEnded(refill.key) }
        }
        for (waiter, outcome) in waiters { waiter.resume(returning: outcome) }
    }

    /// One request decided without waiting: from leased tokens or a remembered refusal when
    /// there are some, else by a round trip (a batch fetch for busy buckets).
    private func leased(_ request: RateLimitRequest) async throws -> RateLimitDecision {
        while true {
            // A waiter told to start over (its batch ran out) that was cancelled meanwhile (the
            // fallback's deadline) stops here rather than join yet another fetch.
            try Task.checkCancellation()
            let startedAt = clock.now
            switch leases.withLock({ $0.take(request.key, cost: request.cost, limit: request.limit, now: startedAt) }) {
            case .decided(let decision):
                return decision
            case .decidedAndRefill(let decision, let want):
                requestRefill(Refill(key: request.key, limit: request.limit, want: want))
                return decision
            case .direct:
                let decision = try await decide([request], maxWait: .zero)[0]
                if !decision.allowed {
                    leases.withLock { $0.remember(refusal: decision, key: request.key, cost: request.cost, now: startedAt) }
                }
                return decision
            case .fetch(let want):
                return try await fetch(request, want: want, startedAt: startedAt)
            case .join:
                let outcome = await withCheckedContinuation { (waiter: Waiter) in
                    if !leases.withLock({ $0.wait(waiter, key: request.key, cost: request.cost) }) { waiter.resume(returning: .retry) }
                }
                switch outcome {
                case .decided(let decision): return decision
                case .retry: continue
                case .failed(let error): throw error
                }
            }
        }
    }

    /// Takes up to `want` tokens for `request`'s bucket and tells the calls waiting for them.
    private func fetch(_ request: RateLimitRequest, want: Int, startedAt: ClockInstant) async throws -> RateLimitDecision {
        let values: [Int]
        do {
            values = try await lease(request.key, limit: request.limit, cost: request.cost, want: want)
        } catch {
            let waiters = leases.withLock { $0.failed(request.key, error: Self.mapped(error), retry: error is CancellationError) }
            for (waiter, outcome) in waiters { waiter.resume(returning: outcome) }
            throw Self.mapped(error)
        }
        let decision: RateLimitDecision
        let waiters: [(Waiter, RateLimitLeaseOutcome)]
        if values[0] > 0 {
            (decision, waiters) = leases.withLock {
                $0.granted(
                    request.key, cost: request.cost, taken: values[0], remaining: values[1], resetAfter: .microseconds(values[3]),
                    now: clock.now)
            }
        } else {
            decision = RateLimitDecision(
                allowed: false, limit: request.limit.burst, remaining: values[1], retryAfter: .microseconds(values[2]),
                resetAfter: .microseconds(values[3]))
            waiters = leases.withLock { $0.refused(request.key, cost: request.cost, decision: decision, now: startedAt) }
        }
        for (waiter, outcome) in waiters { waiter.resume(returning: outcome) }
        return decision
    }

    /// Runs ``leaseScript`` on `key`'s bucket: `taken, remaining, retryAfter, resetAfter` (µs).
    private func lease(_ key: String, limit: RateLimit, cost: Int, want: Int) async throws -> [Int] {
        let reply = try await client.send(
            RedisCommand.evalSHA(
                Self.leaseScript, keys: [keys.rateLimit(key)], arguments: [cost, Double(limit.emissionInterval) / 1000, limit.burst, want]))
        guard let values = reply.array?.compactMap(\.int), values.count == 4 else {
            throw RedisClientError(.unexpectedReply, "rate-limit lease script returned \(reply)")
        }
        return values.map { Int($0) }
    }

    /// KEYS: buckets. ARGV: per bucket its cost and emission interval (µs). Gives back tokens a
    /// reservation took: each TAT moves back by cost × interval (a bucket back at or before now
    /// is deleted: full).
    public static let refundScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = t[1] * 1000000 + t[2]
        for i = 1, #KEYS do
          local tat = tonumber(redis.call('GET', KEYS[i]))
          if tat then
            local back = tat - tonumber(ARGV[2*i-1]) * tonumber(ARGV[2*i])
            if back <= now then
              redis.call('DEL', KEYS[i])
            else
              redis.call('SET', KEYS[i], back, 'PX', math.ceil((back - now) / 1000) + 1)
            end
          end
        end
        return #KEYS
        """)

    /// Decides on Redis, call by call.
    private func decide(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        if slotMode == .perSlot && requests.count > 1 {
            let groups = Dictionary(grouping: requests.indices) { RedisSlot(key: keys.rateLimit(requests[$0].key)) }
            if groups.count > 1 { return try await decidePerSlot(requests, groups: Array(groups.values), maxWait: maxWait) }
        }
        let reply: RESPValue
        do {
            reply = try await client.send(command(for: requests, maxWait: maxWait))
        } catch {
            throw Self.mapped(error)
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

    /// One script per slot group (pipelined: one round trip), then refunds when any refused.
    private func decidePerSlot(_ requests: [RateLimitRequest], groups: [[Int]], maxWait: Duration) async throws -> [RateLimitDecision] {
        let results: [Result<RESPValue, RedisClientError>]
        do {
            results = try await client.pipeline(groups.map { group in command(for: group.map { requests[$0] }, maxWait: maxWait) })
        } catch {
            throw Self.mapped(error)
        }
        var decisions = [RateLimitDecision?](repeating: nil, count: requests.count)
        var accepted: [[Int]] = []
        var failure: (any Error)?
        var wait = Duration.zero
        for (group, result) in zip(groups, results) {
            let values: [Int64]
            switch result {
            case .success(let reply):
                guard let ints = reply.array?.compactMap(\.int), ints.count == 2 + group.count * 3 else {
                    failure = failure ?? RedisClientError(.unexpectedReply, "rate-limit script returned \(reply)")
                    continue
                }
                values = ints
            case .failure(let error):
                failure = failure ?? Self.mapped(error)
                continue
            }
            let groupAccepted = values[0] == 1
            if groupAccepted {
                accepted.append(group)
                wait = max(wait, .microseconds(values[1]))
            }
            for (position, index) in group.enumerated() {
                let base = 2 + position * 3
                decisions[index] = RateLimitDecision(
                    allowed: groupAccepted, limit: requests[index].limit.burst, remaining: Int(values[base]),
                    retryAfter: .microseconds(values[base + 1]), resetAfter: .microseconds(values[base + 2]))
            }
        }
        let allAccepted = failure == nil && accepted.count == groups.count && wait <= max(maxWait, .zero)
        if allAccepted {
            return decisions.compactMap { $0 }.map { decision in
                var decision = decision
                decision.wait = wait
                return decision
            }
        }
        // Someone refused (or failed): give back what the others reserved, in one write.
        let refunds = accepted.map { group in
            RedisCommand.evalSHA(
                Self.refundScript, keys: group.map { keys.rateLimit(requests[$0].key) },
                arguments: group.flatMap { [requests[$0].cost, Double(requests[$0].limit.emissionInterval) / 1000] as [any RedisArgumentConvertible] })
        }
        if !refunds.isEmpty { _ = try? await client.pipeline(refunds) }
        if let failure { throw failure }
        let worst = decisions.compactMap { $0 }.map(\.retryAfter).max() ?? .zero
        return decisions.compactMap { $0 }.map { decision in
            var decision = decision
            decision.allowed = false
            decision.wait = .zero
            if decision.retryAfter == .zero { decision.retryAfter = worst }
            return decision
        }
    }

    /// An unreachable Redis as `storeUnavailable` (the fallback store acts on it); other errors as they are.
    private static func mapped(_ error: any Error) -> any Error {
        if let error = error as? RedisClientError, error.isUnavailable {
            return ToolOpsError(.storeUnavailable, "Redis unavailable for rate limiting", underlying: error)
        }
        return error
    }
}
