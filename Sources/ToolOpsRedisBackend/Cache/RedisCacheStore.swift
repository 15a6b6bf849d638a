import ServiceLifecycle
import Synchronization
import ToolOpsCache
import ToolOpsCore
import ToolOpsRedis

/// The tool-result cache shared by every replica, with an optional near cache (L1) in each.
///
/// - Entries are strings (``CacheEntryCodec`` bytes) with `PX` = their expiry; a hit is one `GET`.
/// - Each write also records the entry in its tool's and tags' sorted sets (scored by
///   expiry, pruned of expired members on every write, at most
///   ``Configuration/maximumSetMembers`` each), so invalidation by tag or tool deletes exactly
///   those keys, in bounded batches — never `KEYS` or `SCAN`.
/// - Every write, delete and invalidation is published on one channel. Replicas drop the
///   affected near-cache entries when the message arrives, and waiters for a fill wake up.
/// - ``CacheFillCoordinator``: one filler per key cluster-wide via `SET NX PX`.
///
/// It is a ServiceLifecycle `Service`, run by the ``RedisBackend`` that made it: ``run()``
/// follows the channel. Until it runs (and whenever the pub/sub connection is lost) the near
/// cache is off and emptied, and fill waiters poll.
///
/// Coherence: a replica stops serving a near-cache entry when the invalidation message
/// reaches it (a pub/sub hop, typically < 1 ms on a LAN); a `GET` in flight across an
/// invalidation is not put into the near cache. If the channel breaks, the near cache is
/// emptied at once. ``NearCache/maximumAge`` bounds the damage of anything else.
public final class RedisCacheStore: CacheStore, CacheFillCoordinator, Service {
    /// The per-replica L1 in front of Redis.
    public struct NearCache: Sendable {
        /// Defaults to 10,000.
        public var maximumEntries: Int
        /// Defaults to 64 MiB.
        public var maximumBytes: Int
        /// A copy is dropped after this long even without an invalidation. Defaults to 60 s.
        public var maximumAge: Duration
        public init(maximumEntries: Int = 10_000, maximumBytes: Int = 64 << 20, maximumAge: Duration = .seconds(60)) {
            self.maximumEntries = maximumEntries
            self.maximumBytes = maximumBytes
            self.maximumAge = maximumAge
        }
    }

    public struct Configuration: Sendable {
        public var keys: RedisKeySchema
        /// Defaults to ``NearCache/init(maximumEntries:maximumBytes:maximumAge:)``; `nil` turns it off.
        public var nearCache: NearCache?
        /// The most entries one tag or tool set holds; a write that would exceed it is not
        /// cached (so invalidation stays bounded). Defaults to 100,000.
        public var maximumSetMembers: Int
        /// Keys deleted per script call while invalidating (1 ... ``RedisCacheStore/maximumInvalidationBatch``). Defaults to 1,000.
        public var invalidationBatch: Int
        /// How often a fill waiter checks whether the filler is still there. Defaults to 100 ms.
        public var pollInterval: Duration

        public init(
            keys: RedisKeySchema = .init(), nearCache: NearCache? = NearCache(), maximumSetMembers: Int = 100_000,
            invalidationBatch: Int = 1_000, pollInterval: Duration = .milliseconds(100)
        ) {
            self.keys = keys
            self.nearCache = nearCache
            self.maximumSetMembers = maximumSetMembers
            self.invalidationBatch = invalidationBatch
            self.pollInterval = pollInterval
        }
    }

    struct State {
        var started = false
        var subscribed = false
        var handle: RedisSubscriptionHandle?
        /// Times the channel was lost (the near cache was emptied and turned off each time).
        var channelLosses = 0
    }

    public let client: RedisClient
    public let configuration: Configuration
    let clock: any ToolOpsClock
    let near: MemoryCacheStore?
    /// Bumped by every invalidation seen: a `GET` that overlapped one is not kept in L1.
    let epoch = Atomic<UInt64>(0)
    let origin: String
    let signals = KeyedSignals<CacheKey>()
    private let state = Mutex(State())
    var keys: RedisKeySchema { configuration.keys }

    public init(client: RedisClient, configuration: Configuration = .init(), clock: any ToolOpsClock = WallClock()) throws(ToolOpsError) {
        guard configuration.maximumSetMembers > 0, configuration.invalidationBatch > 0, configuration.pollInterval > .zero else {
            throw ToolOpsError(.invalidConfiguration, "cache set bound, invalidation batch and poll interval must be positive")
        }
        // Lua's unpack() fails above ~8,000 values: the invalidation script unpacks a batch.
        guard configuration.invalidationBatch <= Self.maximumInvalidationBatch else {
            throw ToolOpsError(
                .invalidConfiguration, "invalidationBatch must be at most \(Self.maximumInvalidationBatch), got \(configuration.invalidationBatch)")
        }
        self.client = client
        self.configuration = configuration
        self.clock = clock
        self.near = configuration.nearCache.map {
            MemoryCacheStore(.init(maximumEntries: $0.maximumEntries, maximumBytes: $0.maximumBytes), clock: clock)
        }
        self.origin = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    }

    /// The largest ``Configuration/invalidationBatch`` (Lua's `unpack` limit is about 8,000).
    public static let maximumInvalidationBatch = 5_000

    // MARK: Scripts

    /// KEYS[1]: the entry; KEYS[2…]: its tool and tag sets. ARGV: bytes, TTL (ms), set
    /// bound, channel, message. Returns 0 (and writes nothing) if a set is full.
    static let setScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        local ttl = tonumber(ARGV[2])
        local cap = tonumber(ARGV[3])
        for i = 2, #KEYS do
          redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
          if redis.call('ZCARD', KEYS[i]) >= cap and not redis.call('ZSCORE', KEYS[i], KEYS[1]) then return 0 end
        end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
        for i = 2, #KEYS do
          redis.call('ZADD', KEYS[i], now + ttl, KEYS[1])
          if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
        end
        redis.call('PUBLISH', ARGV[4], ARGV[5])
        return 1
        """)

    /// KEYS[1]: a tag or tool set. Deletes up to ARGV[1] of its entries; publishes ARGV[3] on
    /// ARGV[2] once the set is empty. Returns `{deleted, left}`.
    static let invalidateScript = RedisScript(
        """
        local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
        local deleted = 0
        if #members > 0 then
          deleted = redis.call('DEL', unpack(members))
          redis.call('ZREM', KEYS[1], unpack(members))
        end
        local left = redis.call('ZCARD', KEYS[1])
        if left == 0 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
        return {deleted, left}
        """)

    /// KEYS[1]: an entry. Deletes it and publishes ARGV[2] on ARGV[1].
    static let deleteScript = RedisScript(
        """
        local deleted = redis.call('DEL', KEYS[1])
        redis.call('PUBLISH', ARGV[1], ARGV[2])
        return deleted
        """)

    /// KEYS[1]: a fill lease. Deletes it if ARGV[1] still holds it and publishes ARGV[3] on ARGV[2].
    static let releaseScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          redis.call('DEL', KEYS[1])
          redis.call('PUBLISH', ARGV[2], ARGV[3])
          return 1
        end
        return 0
        """)

    // MARK: Channel

    /// Follows the cache channel until graceful shutdown (or cancellation): the near cache
    /// serves while the channel is up, and fill waiters wake on messages instead of polling.
    /// While Redis is unreachable it keeps trying to subscribe, with the client's reconnect
    /// backoff; it never throws. Run it once (``RedisBackend`` does).
    public func run() async throws {
        await followChannel(client: client, subscribe: { try await self.start() }, unsubscribe: { self.stop() })
    }

    /// Subscribes to the cache channel (idempotent): turns the near cache on and lets fill
    /// waiters wake on messages instead of polling.
    package func start() async throws {
        let alreadyStarted = state.withLock { state -> Bool in
            defer { state.started = true }
            return state.started
        }
        if alreadyStarted { return }
        let lossesBefore = state.withLock { $0.channelLosses }
        do {
            let handle = try await client.subscribe(to: [keys.cacheEvents]) { [weak self] event in self?.handle(event) }
            state.withLock {
                $0.handle = handle
                // A loss reported between the confirmation and here has the last word (and a
                // `restored` after it turns the near cache back on).
                if $0.channelLosses == lossesBefore { $0.subscribed = true }
            }
        } catch {
            state.withLock { $0.started = false }
            throw error
        }
    }

    /// Stops following the channel; the near cache is emptied and off.
    package func stop() {
        let handle = state.withLock { state -> RedisSubscriptionHandle? in
            defer { state = State() }
            return state.handle
        }
        handle?.cancel()
        forgetNear()
    }

    /// How often the channel was lost since the store started following it.
    package var channelLosses: Int { state.withLock { $0.channelLosses } }

    /// Whether the near cache is serving (the channel is up).
    public var isNearCacheActive: Bool { near != nil && state.withLock { $0.subscribed } }

    /// Messages: `<kind> <origin> <subject>` — `k` key written or deleted, `t` tag and `T`
    /// tool invalidated, `a` everything removed, `r` fill released without a write.
    func message(_ kind: Character, _ subject: String) -> String { "\(kind) \(origin) \(subject)" }

    func handle(_ event: RedisPubSubEvent) {
        switch event {
        case .message(let message):
            let text = message.text
            let parts = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let kind = parts[0].first else { return }
            let subject = String(parts[2])
            let own = parts[1] == origin
            epoch.add(1, ordering: .sequentiallyConsistent)
            switch kind {
            case "k":
                guard let key = try? CacheKey(subject) else { return }
                if !own { near?.remove(key) }
                signals.signal(key)
            case "r":
                if let key = try? CacheKey(subject) { signals.signal(key) }
            case "t":
                near?.removeAll(tag: subject)
            case "T":
                if let tool = try? ToolID(subject) { near?.removeAll(tool: tool) }
            case "a":
                near?.clear()
            default:
                return
            }
        case .connectionLost:
            // Invalidations may be missed from now on: stop serving L1 until the channel is back.
            state.withLock {
                $0.subscribed = false
                $0.channelLosses += 1
            }
            forgetNear()
            signals.signalAll()
        case .restored:
            forgetNear()
            state.withLock { $0.subscribed = $0.started }
        }
    }

    private func forgetNear() {
        epoch.add(1, ordering: .sequentiallyConsistent)
        near?.clear()
    }

    // MARK: CacheStore

    public func get(_ key: CacheKey) async throws -> CacheEntry? {
        let useNear = near != nil && state.withLock { $0.subscribed }
        if useNear, let entry = near?.lookup(key) { return entry }
        let before = epoch.load(ordering: .sequentiallyConsistent)
        let reply = try await redis("read") { try await self.client.send("GET", self.keys.cacheEntry(key.value)) }
        guard let bytes = reply.bytes, let entry = try? CacheEntryCodec.decode(bytes) else { return nil }
        let now = clock.now
        if entry.isExpired(at: now) { return nil }
        if useNear, let near = configuration.nearCache, epoch.load(ordering: .sequentiallyConsistent) == before,
            state.withLock({ $0.subscribed })
        {
            self.near?.store(key, entry, size: bytes.count, keepUntil: now + near.maximumAge)
        }
        return entry
    }

    public func set(_ key: CacheKey, _ entry: CacheEntry, encodedValue: [UInt8]?) async throws {
        let bytes = try encodedValue.map { CacheEntryCodec.encode(entry, value: $0) } ?? CacheEntryCodec.encode(entry)
        let ttl = max(1, (entry.expiresAt - clock.now).nanosecondsClamped / 1_000_000)
        var sets = [keys.cacheTool(entry.tool.description)]
        for tag in entry.tags.sorted() { sets.append(keys.cacheTag(tag)) }
        let setKeys = sets
        // As in `get`: a write that overlapped any announcement (another replica's newer write
        // of this key, an invalidation) is not kept in L1, where it could outlive the newer value.
        let before = epoch.load(ordering: .sequentiallyConsistent)
        let stored: Bool
        if isCluster {
            stored = try await setAcrossSlots(
                entry: keys.cacheEntry(key.value), sets: setKeys, bytes: bytes, ttl: ttl, message: message("k", key.value))
        } else {
            stored = try await redis("write") {
                try await self.client.run(
                    Self.setScript, keys: [self.keys.cacheEntry(key.value)] + setKeys,
                    arguments: [bytes, ttl, self.configuration.maximumSetMembers, self.keys.cacheEvents, self.message("k", key.value)])
            }.int == 1
        }
        forgetNearKey(key)
        guard stored else {
            throw ToolOpsError(.invalidInput, "not cached: a tag or tool set of \(key) holds \(configuration.maximumSetMembers) entries")
        }
        if let near = configuration.nearCache, epoch.load(ordering: .sequentiallyConsistent) == before, state.withLock({ $0.subscribed }) {
            self.near?.store(key, entry, size: bytes.count, keepUntil: clock.now + near.maximumAge)
        }
    }

    public func delete(_ key: CacheKey) async throws {
        try await redis("delete") {
            try await self.client.run(
                Self.deleteScript, keys: [self.keys.cacheEntry(key.value)], arguments: [self.keys.cacheEvents, self.message("k", key.value)])
        }
        forgetNearKey(key)
    }

    @discardableResult
    public func invalidate(tag: String) async throws -> Int {
        let removed = try await invalidate(set: keys.cacheTag(tag), message: message("t", tag))
        epoch.add(1, ordering: .sequentiallyConsistent)
        near?.removeAll(tag: tag)
        return removed
    }

    @discardableResult
    public func invalidate(tool: ToolID) async throws -> Int {
        let removed = try await invalidate(set: keys.cacheTool(tool.description), message: message("T", tool.description))
        epoch.add(1, ordering: .sequentiallyConsistent)
        near?.removeAll(tool: tool)
        return removed
    }

    /// Deletes every cache key under the prefix with `SCAN` (administrative, not the hot path;
    /// on a cluster, every master's keys).
    public func removeAll() async throws {
        // The prefix is escaped: a prefix with glob characters must not match other deployments' keys.
        let pattern = "\(RedisKeySchema.globEscaped(keys.prefix)):cache:*"
        try await redis("scan") {
            try await self.client.scan(matching: pattern) { found in
                // One UNLINK per key, pipelined: on a cluster the keys are in many slots.
                _ = try await self.client.pipeline(found.map { RedisCommand("UNLINK", $0) })
            }
        }
        try await redis("publish") { try await self.client.send("PUBLISH", self.keys.cacheEvents, self.message("a", "*")) }
        forgetNear()
    }

    private func invalidate(set: String, message: String) async throws -> Int {
        if isCluster { return try await invalidateAcrossSlots(set: set, message: message) }
        var removed = 0
        while true {
            let reply = try await redis("invalidate") {
                try await self.client.run(
                    Self.invalidateScript, keys: [set],
                    arguments: [self.configuration.invalidationBatch, self.keys.cacheEvents, message])
            }
            guard let parts = reply.array, parts.count == 2, let deleted = parts[0].int, let left = parts[1].int else {
                throw ToolOpsError(.invalidInput, "unexpected reply to cache invalidation: \(reply)")
            }
            removed += Int(deleted)
            if left == 0 { return removed }
        }
    }

    private func forgetNearKey(_ key: CacheKey) {
        epoch.add(1, ordering: .sequentiallyConsistent)
        near?.remove(key)
    }

    // MARK: CacheFillCoordinator

    public func acquireFill(_ key: CacheKey, lease: Duration) async throws -> CacheFillLease? {
        let token = "\(origin):\(UInt64.random(in: 0...UInt64.max))"
        let milliseconds = max(1, lease.nanosecondsClamped / 1_000_000)
        let reply = try await redis("lease") {
            try await self.client.send("SET", self.keys.cacheFill(key.value), token, "NX", "PX", milliseconds)
        }
        return reply.isNull ? nil : CacheFillLease(key: key, token: token)
    }

    /// Written at once and not waited for (the filler's answer does not depend on it), and not
    /// cancelled with the filler: `EVAL` with the source, so a script cache emptied by a
    /// restart costs no `NOSCRIPT` round. With no connection to queue it on it is sent the
    /// ordinary way; if Redis is unreachable the lease simply expires.
    public func releaseFill(_ lease: CacheFillLease) async {
        let command = RedisCommand(
            "EVAL",
            arguments: [Self.releaseScript.source, 1, keys.cacheFill(lease.key.value), lease.token, keys.cacheEvents, message("r", lease.key.value)])
        if client.sendUnawaited([command]) { return }
        _ = try? await client.sendIgnoringCancellation(command)
    }

    public func waitForFill(_ key: CacheKey, timeout: Duration) async {
        let deadline = clock.now + timeout
        while !Task.isCancelled {
            let remaining = deadline - clock.now
            if remaining <= .zero { return }
            // Woken by the filler's write or release; otherwise check it is still there.
            if await signals.wait(key, timeout: min(remaining, configuration.pollInterval)) { return }
            guard let exists = try? await client.send("EXISTS", keys.cacheFill(key.value)).int, exists == 1 else { return }
        }
    }

    @discardableResult
    func redis<T: Sendable>(_ what: String, _ body: @Sendable () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as RedisClientError where error.isUnavailable {
            throw ToolOpsError(.storeUnavailable, "Redis unavailable for cache \(what)", underlying: error)
        }
    }
}
