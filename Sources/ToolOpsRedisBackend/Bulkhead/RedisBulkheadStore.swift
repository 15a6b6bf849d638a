import ServiceLifecycle
import Synchronization
import ToolOpsCore
import ToolOpsRedis
import ToolOpsResilience

/// A bulkhead shared by every replica: a sorted set of leases per bulkhead (member = a random
/// lease id chosen by the acquiring replica, score = expiry in Redis time). Expired leases —
/// those of a crashed replica — are dropped before each admission, and a release removes only
/// its own id, so a late or duplicate release can never free somebody else's slot. An
/// acquisition whose answer is lost (cancelled, timed out, connection dropped) releases its id,
/// in case the script granted it. A call running longer than its lease renews it (the
/// middleware does, every third of the lease); the key lives as long as its longest lease.
///
/// Waiting is first come, first served across replicas: a waiter holds a ticket in the
/// bulkhead's queue (score = arrival, Redis time µs) and is admitted only when the free slots
/// outnumber the tickets ahead of it; a caller that does not wait never takes a slot a waiter
/// is owed. Waiters poll (1 ms doubling to 25 ms) and refresh their ticket each time; a
/// ticket not refreshed for 2 s (its replica died) leaves the queue.
///
/// Large bulkheads reuse slots (see ``Reuse``): while ``run()`` runs, a slot released on this
/// replica is kept for 10 ms for its next call on the same bulkhead, which then needs no
/// round trip; a busy replica cycles its slots without asking Redis twice a call. A reused
/// slot keeps its lease id, so the release fencing above holds between replicas; within a
/// replica each permit must be released once (the middleware does exactly that).
public final class RedisBulkheadStore: LocallyAcquiringBulkheadStore {
    public let client: RedisClient
    public let keys: RedisKeySchema
    let clock: any ToolOpsClock

    /// How released slots are kept for this replica's next call.
    public struct Reuse: Sendable {
        /// How long a released slot stays with this replica; other replicas see it in use that
        /// long. `.zero` turns reuse off. Defaults to 10 ms.
        public var hold: Duration
        /// A bulkhead keeps at most `limit / divisor` released slots (none below a limit of
        /// `divisor`). Defaults to 16.
        public var divisor: Int

        public init(hold: Duration = .milliseconds(10), divisor: Int = 16) {
            self.hold = hold
            self.divisor = divisor
        }

        /// Every slot goes back to Redis when its call ends.
        public static let off = Reuse(hold: .zero)
    }

    private struct SpareState {
        /// The permits of calls in flight (whose leases ``run()`` renews) and the kept slots.
        var book: BulkheadSpares
        /// Spares are kept, and leases renewed here, only while ``run()`` is there to do it.
        var sweeping = false
        /// A sweep of kept slots is under way or asked for: releases need not ask again (each
        /// ask is a lock and, when the sweeper waits, a task wake-up).
        var sweepAsked = false
    }

    private let spares: Mutex<SpareState>
    private let sweepRequests = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    /// - Parameter reuse: how released slots are kept for this replica's next call (only while
    ///   ``run()`` runs); defaults to ``Reuse/init(hold:divisor:)``.
    public init(client: RedisClient, keys: RedisKeySchema = .init(), clock: any ToolOpsClock = SystemClock(), reuse: Reuse = .init()) {
        self.client = client
        self.keys = keys
        self.clock = clock
        self.spares = Mutex(SpareState(book: BulkheadSpares(configuration: .init(hold: reuse.hold, divisor: reuse.divisor))))
    }

    /// The least time between two sweeps of kept slots: half the hold.
    var sweepSpacing: Duration { spares.withLock { $0.book.configuration.hold } / 2 }

    /// Whether released slots may be kept now (``run()`` is running).
    var isKeepingSlots: Bool { spares.withLock { $0.sweeping } }

    /// Gives kept slots back to Redis when their hold ends, until graceful shutdown or
    /// cancellation; then gives back every slot still kept. Without it, slots are not kept.
    public func run() async {
        spares.withLock { $0.sweeping = true }
        let (requests, continuation) = sweepRequests
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.renewLeases() }
                for await _ in requests {
                    while let next = nextSweep() {
                        // Expiries are swept together, at most every half hold: a busy replica
                        // releases thousands of slots a second, and a wake-up for each was a
                        // large share of a call's CPU. A slot goes back within 1.5 × hold.
                        try? await clock.sleep(until: max(next, clock.now + sweepSpacing))
                        giveBack(spares.withLock { $0.book.expired(now: clock.now) })
                        if Task.isCancelled { break }
                    }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            continuation.finish()
        }
        let rest = spares.withLock { state in
            state.sweeping = false
            state.sweepAsked = false
            return state.book.expired(now: clock.now, all: true)
        }
        giveBack(rest)
    }

    /// When the next kept slot's hold ends; `nil` when none is kept (a release then asks for
    /// the next sweep).
    private func nextSweep() -> ClockInstant? {
        spares.withLock { state in
            let next = state.book.nextExpiry
            if next == nil { state.sweepAsked = false }
            return next
        }
    }

    /// Renews the lease of every call in flight (with a lease of at least ``selfRenewedLease``)
    /// a third of a lease after its last renewal — one loop for all of them instead of a timer
    /// per call. Checks every ``renewalCheck``; returns when cancelled.
    private func renewLeases() async {
        while !Task.isCancelled {
            let now = clock.now
            let (due, next) = spares.withLock { $0.book.dueForRenewal(now: now, minimumLease: Self.selfRenewedLease, check: Self.renewalCheck) }
            for permit in due {
                // A lapsed lease leaves the book (renew says so); an unreachable Redis is tried
                // again 100 ms later, as long as the call holds the slot — without the lease
                // counting as renewed (a released slot is reused only while really fresh).
                let renewed = try? await renew(BulkheadPermit(key: permit.key, token: permit.token), lease: permit.lease)
                if renewed == nil { spares.withLock { $0.book.renewalFailed(permit.token, retryAt: clock.now + .milliseconds(100)) } }
            }
            do { try await clock.sleep(until: next) } catch { return }
        }
    }

    /// Returns kept slots to Redis, without waiting (if that fails, their leases expire).
    private func giveBack(_ slots: [String: [UInt64]]) {
        let commands = slots.map { key, tokens in
            RedisCommand("ZREM", arguments: [keys.bulkheadLeases(key)] + tokens.map { String($0) })
        }
        if !commands.isEmpty { client.sendUnawaited(commands) }
    }

    /// How long a waiter's ticket stays in the queue without a refresh.
    static let ticketLifetime = Duration.seconds(2)

    /// KEYS: leases, queue (ticket → arrival µs), tickets (ticket → expiry ms). ARGV: limit,
    /// lease (ms), lease id, ticket ("" when not waiting), ticket lifetime (ms). Returns 1 when
    /// the lease was granted, 0 when the caller must wait (its ticket is queued) or give up.
    public static let acquireScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
        for i = 1, #stale do redis.call('ZREM', KEYS[2], stale[i]) end
        if #stale > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
        local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
        local ahead = redis.call('ZCARD', KEYS[2])
        local ticket = ARGV[4]
        if ticket ~= '' then
          local rank = redis.call('ZRANK', KEYS[2], ticket)
          if rank then ahead = rank end
        end
        if free > ahead then
          redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
          if ticket ~= '' then
            redis.call('ZREM', KEYS[2], ticket)
            redis.call('ZREM', KEYS[3], ticket)
          end
          local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
          redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]) + 1)
          return 1
        end
        if ticket ~= '' then
          redis.call('ZADD', KEYS[2], 'NX', t[1] * 1000000 + t[2], ticket)
          redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ticket)
          redis.call('PEXPIRE', KEYS[2], ARGV[5])
          redis.call('PEXPIRE', KEYS[3], ARGV[5])
        end
        return 0
        """)

    /// KEYS: leases. ARGV: lease (ms), lease id. Returns 1 when the lease was still held and is
    /// extended, 0 when it had lapsed.
    public static let renewScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        local expiry = redis.call('ZSCORE', KEYS[1], ARGV[2])
        if not expiry or tonumber(expiry) <= now then return 0 end
        redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
        local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
        redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]) + 1)
        return 1
        """)

    /// A slot this replica kept from a call that just ended, if there is one: no round trip.
    package func acquireLocally(key: String, limit: Int, lease: Duration) -> BulkheadPermit? {
        let now = clock.now
        let (token, stale) = spares.withLock { state -> (UInt64?, [UInt64]) in
            guard state.sweeping else { return (nil, []) }
            return state.book.take(key: key, limit: limit, lease: lease, now: now)
        }
        if !stale.isEmpty { giveBack([key: stale]) }
        // Kept slots exist only while run() sweeps, and run() renews what it tracks.
        return token.map { BulkheadPermit(key: key, token: $0, renewedByStore: lease >= Self.selfRenewedLease) }
    }

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        // Not for callers that wait: they queue behind other replicas' waiters, and a kept slot
        // would jump them.
        if maxWait == .zero, let permit = acquireLocally(key: key, limit: limit, lease: lease) { return permit }
        let leaseMs = max(1, lease.nanosecondsClamped / 1_000_000)
        let deadline = clock.now + maxWait
        let ticket = maxWait > .zero ? String(Self.newLeaseID()) : ""
        let scriptKeys = [keys.bulkheadLeases(key), keys.bulkheadQueue(key), keys.bulkheadTickets(key)]
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
                    Self.acquireScript, keys: scriptKeys,
                    arguments: [limit, leaseMs, String(token), ticket, Self.ticketLifetime.nanosecondsClamped / 1_000_000])
            } catch {
                if (error as? RedisClientError)?.code != .serverError {
                    giveBack(BulkheadPermit(key: key, token: token), ticket: ticket)
                }
                if let error = error as? RedisClientError, error.isUnavailable {
                    throw ToolOpsError(.storeUnavailable, "Redis unavailable for bulkhead \(key)", underlying: error)
                }
                throw error
            }
            guard let granted = reply.int else { throw RedisClientError(.unexpectedReply, "bulkhead script returned \(reply)") }
            if granted == 1 {
                let now = clock.now
                let tracked = spares.withLock { state -> Bool in
                    guard state.sweeping else { return false }
                    return state.book.granted(token, key: key, limit: limit, lease: lease, now: now, reusable: maxWait == .zero)
                }
                return BulkheadPermit(key: key, token: token, renewedByStore: tracked && lease >= Self.selfRenewedLease)
            }
            let now = clock.now
            if now >= deadline {
                // Leave the queue at once: a stale ticket would hold up the waiters behind it.
                if !ticket.isEmpty { client.sendUnawaited(leaveQueueCommands(key: key, ticket: ticket)) }
                throw ToolOpsError(.bulkheadFull, "bulkhead \(key) is full (\(limit) in use across replicas)")
            }
            do {
                try await clock.sleep(until: min(deadline, now + pause))
            } catch {
                if !ticket.isEmpty { client.sendUnawaited(leaveQueueCommands(key: key, ticket: ticket)) }
                throw error
            }
            pause = min(pause * 2, .milliseconds(25))
        }
    }

    /// Leases lapse: a replica that died frees its slots.
    public var leasesExpire: Bool { true }

    public func renew(_ permit: BulkheadPermit, lease: Duration) async throws -> Bool {
        let leaseMs = max(1, lease.nanosecondsClamped / 1_000_000)
        do {
            let renewedAt = clock.now
            let reply = try await client.run(Self.renewScript, keys: [keys.bulkheadLeases(permit.key)], arguments: [leaseMs, String(permit.token)])
            spares.withLock { state in
                if reply.int == 1 { state.book.renewed(permit.token, now: renewedAt) } else { state.book.lapsed(permit.token) }
            }
            return reply.int == 1
        } catch let error as RedisClientError where error.isUnavailable {
            throw ToolOpsError(.storeUnavailable, "Redis unavailable for bulkhead \(permit.key)", underlying: error)
        }
    }

    /// Whether ``run()`` renews this permit's lease while its call runs (it is running, and the
    /// permit is one of its calls in flight): then the middleware need not.
    ///
    /// Leases shorter than ``selfRenewedLease`` are left to the caller: the service checks ten
    /// times a second, which must stay well inside a third of the lease.
    public func renewsLease(of permit: BulkheadPermit) -> Bool {
        spares.withLock { state in
            guard state.sweeping, let permit = state.book.inFlight[permit.token] else { return false }
            return permit.lease >= Self.selfRenewedLease
        }
    }

    /// The shortest lease ``run()`` renews itself (1 s).
    public static let selfRenewedLease = Duration.seconds(1)
    /// How often ``run()`` looks for leases due for renewal.
    static let renewalCheck = Duration.milliseconds(100)

    public func release(_ permit: BulkheadPermit) async {
        let (kept, askSweep) = spares.withLock { state -> (Bool, Bool) in
            guard state.book.released(permit.token, now: clock.now, keep: state.sweeping) else { return (false, false) }
            defer { state.sweepAsked = true }
            return (true, !state.sweepAsked)
        }
        if kept {
            if askSweep { sweepRequests.continuation.yield() }
            return
        }
        // Written at once and not waited for: the caller's answer does not depend on it (one
        // round trip less per call), and nothing cancels it with the caller (a cancelled call is
        // the usual reason to release early): the slot comes back now, not after a whole lease.
        // With no connection to queue it on, it is sent the ordinary way; if Redis is
        // unreachable the lease simply expires.
        let command = RedisCommand("ZREM", keys.bulkheadLeases(permit.key), String(permit.token))
        if client.sendUnawaited([command]) { return }
        _ = try? await client.sendIgnoringCancellation(command)
    }

    /// Takes back a lease the script may have granted after we stopped waiting for its answer,
    /// and leaves the queue; sent without waiting (the caller is already failing).
    private func giveBack(_ permit: BulkheadPermit, ticket: String) {
        var commands = [RedisCommand("ZREM", keys.bulkheadLeases(permit.key), String(permit.token))]
        if !ticket.isEmpty { commands += leaveQueueCommands(key: permit.key, ticket: ticket) }
        client.sendUnawaited(commands)
    }

    private func leaveQueueCommands(key: String, ticket: String) -> [RedisCommand] {
        [RedisCommand("ZREM", keys.bulkheadQueue(key), ticket), RedisCommand("ZREM", keys.bulkheadTickets(key), ticket)]
    }

    /// A random lease id: unique in practice (62 bits), never 0, and clear of the top bit the
    /// fallback wrapper uses to tag local permits.
    static func newLeaseID() -> UInt64 { UInt64.random(in: 1...(UInt64(1) << 62)) }
}
