import ToolOpsCache
import ToolOpsCore
import ToolOpsRedis

/// Writes and invalidations on a Redis Cluster, where an entry (`cache:{<key>}`) and its tool
/// and tag sets (`cache:tool:{…}`, `cache:tag:{…}`) are in different slots, so no one script can
/// touch them all. The scheme keeps the guarantee that matters — **an entry that survives an
/// invalidation is still indexed**, so a later invalidation finds it:
///
/// - A write adds the entry to its sets (one script per set, pipelined; a full set refuses and
///   nothing is written), writes the entry, then adds it to its sets again.
/// - An invalidation takes a batch of members out of the set atomically (`ZRANGE` + `ZREM` in
///   one script), deletes those entries (one `DEL` each, pipelined over the nodes), and repeats
///   until the set is empty; then it publishes.
///
/// A write overlapping an invalidation either wrote its entry before the entries were deleted
/// (it is deleted) or after — and then its second add came after the batch was taken out, so
/// the entry is in the set again. If deleting a batch fails, its members are put back (with
/// their scores) before the error is returned, so a retry finds them.
extension RedisCacheStore {
    var isCluster: Bool { client.configuration.topology.isCluster }

    /// KEYS[1]: a tag or tool set. ARGV: the entry key (a member, not a key the script touches),
    /// TTL (ms), set bound. Prunes expired members; returns 0 if the set is full without the
    /// entry, else adds it scored by its expiry, extends the set's TTL and returns 1.
    static let indexScript = RedisScript(
        """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        local ttl = tonumber(ARGV[2])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
        redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
        if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
        return 1
        """)

    /// KEYS[1]: an entry. ARGV: bytes, TTL (ms), channel, message. Writes it and publishes.
    static let entryScript = RedisScript(
        """
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        redis.call('PUBLISH', ARGV[3], ARGV[4])
        return 1
        """)

    /// KEYS[1]: a tag or tool set. Takes up to ARGV[1] members out; returns `{members with
    /// scores (flat), members left}`.
    static let takeScript = RedisScript(
        """
        local taken = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
        local members = {}
        for i = 1, #taken, 2 do members[#members + 1] = taken[i] end
        if #members > 0 then redis.call('ZREM', KEYS[1], unpack(members)) end
        return {taken, redis.call('ZCARD', KEYS[1])}
        """)

    /// The cluster write: index, write, index again. `false` (nothing written) when a set is full.
    func setAcrossSlots(entry: String, sets: [String], bytes: [UInt8], ttl: Int64, message: String) async throws -> Bool {
        let index = sets.map {
            RedisCommand.evalSHA(Self.indexScript, keys: [$0], arguments: [entry, ttl, configuration.maximumSetMembers])
        }
        // Each result is read inside `redis`: an unavailable node is a store outage (the
        // failover's cue), like a failed command.
        let added = try await redis("write") { try await self.client.pipeline(index).map { try $0.get().int } }
        if added.contains(where: { $0 != 1 }) { return false }
        try await redis("write") {
            try await self.client.run(Self.entryScript, keys: [entry], arguments: [bytes, ttl, self.keys.cacheEvents, message])
        }
        // Again after the write: an invalidation that took the entry out of a set in between
        // may have run its deletes before this write landed.
        try await redis("write") { for result in try await self.client.pipeline(index) { _ = try result.get() } }
        return true
    }

    /// The cluster invalidation: take a batch out of the set, delete its entries, repeat; publish.
    func invalidateAcrossSlots(set: String, message: String) async throws -> Int {
        var removed = 0
        while true {
            let reply = try await redis("invalidate") {
                try await self.client.run(Self.takeScript, keys: [set], arguments: [self.configuration.invalidationBatch])
            }
            guard let parts = reply.array, parts.count == 2, let taken = parts[0].array, let left = parts[1].int else {
                throw ToolOpsError(.invalidInput, "unexpected reply to cache invalidation: \(reply)")
            }
            var members: [(member: [UInt8], score: String)] = []
            for pair in stride(from: 0, to: taken.count - 1, by: 2) {
                if let member = taken[pair].bytes, let score = taken[pair + 1].string { members.append((member, score)) }
            }
            if !members.isEmpty {
                let deletes = members.map { RedisCommand("DEL", $0.member) }
                do {
                    removed += try await redis("invalidate") {
                        try await self.client.pipeline(deletes).reduce(0) { $0 + Int(try $1.get().int ?? 0) }
                    }
                } catch {
                    // Put the batch back so that a retry finds these entries (best effort: the
                    // set's node may be the one that failed), expiring with its last member if
                    // the take had emptied it.
                    let back = RedisCommand("ZADD", arguments: [set] + members.flatMap { [$0.score, $0.member] as [any RedisArgumentConvertible] })
                    let latest = members.compactMap { Double($0.score) }.max() ?? 0
                    _ = try? await client.pipeline([back, RedisCommand("PEXPIREAT", set, Int64(latest), "NX")])
                    throw error
                }
            }
            if left == 0 {
                try await redis("invalidate") { try await self.client.send("PUBLISH", self.keys.cacheEvents, message) }
                return removed
            }
        }
    }
}
