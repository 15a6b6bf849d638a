/// Every Redis key ToolOps uses, in one place (documented in `Docs/redis-keys.md`).
///
/// Keys are `<prefix>:<kind>:{<name>}`. The `{…}` hash tag keeps all keys of one logical
/// object in one Redis Cluster slot.
public struct RedisKeySchema: Sendable, Hashable {
    /// Defaults to `toolops`; give each deployment sharing a Redis its own prefix.
    public var prefix: String

    public init(prefix: String = "toolops") { self.prefix = prefix }

    /// The least privileges ToolOps needs, as Redis ACL rules for `ACL SETUSER <user> on
    /// ><password> …`: its keys and channels under ``prefix`` only, and exactly the commands
    /// it sends (scripts' own calls included). `toolops status` and the cache's `removeAll`
    /// also need `SCAN` and `MEMORY USAGE`, which are included.
    ///
    /// ```
    /// ACL SETUSER toolops on >s3cret ~toolops:* &toolops:* -@all +get +set …
    /// ```
    public var aclRules: [String] {
        let glob = RedisKeySchema.globEscaped(prefix)
        return ["~\(glob):*", "&\(glob):*", "-@all"] + Self.aclCommands.map { "+" + $0 }
    }

    /// The commands of ``aclRules`` (`client|setname` is a subcommand).
    public static let aclCommands = [
        // connections, cluster and Sentinel routing, pub/sub
        "auth", "hello", "ping", "select", "client|setname", "asking", "cluster|slots", "subscribe", "unsubscribe", "publish",
        // scripts and what they call
        "evalsha", "eval", "time", "get", "set", "del", "unlink", "exists", "incrby", "persist", "pexpire", "pexpireat", "pttl",
        "hget", "hset", "hdel", "hmget", "hgetall", "zadd", "zrem", "zcard", "zscore", "zrank", "zrange", "zrangebyscore",
        "zremrangebyscore", "xadd", "xrevrange",
        // administration: toolops status, cache removeAll
        "scan", "memory|usage",
    ]

    /// The GCRA state (theoretical arrival time, µs) of one rate-limit bucket.
    public func rateLimit(_ bucket: String) -> String { "\(prefix):rl:{\(bucket)}" }

    /// The leases of one bulkhead: a sorted set, member = lease id (random, chosen by the
    /// acquiring replica), score = expiry (ms, Redis time).
    public func bulkheadLeases(_ name: String) -> String { "\(prefix):bh:{\(name)}" }

    /// The waiters of one bulkhead, first come first served: a sorted set, member = ticket
    /// (random, per waiting call), score = arrival (µs, Redis time).
    public func bulkheadQueue(_ name: String) -> String { "\(prefix):bhq:{\(name)}" }

    /// The waiters' tickets with their expiry: a sorted set, member = ticket, score = expiry
    /// (ms, Redis time); a ticket not refreshed in time (its replica died) leaves the queue.
    public func bulkheadTickets(_ name: String) -> String { "\(prefix):bht:{\(name)}" }

    /// One circuit breaker: a hash with its state and time-bucketed counts.
    public func circuitBreaker(_ name: String) -> String { "\(prefix):cb:{\(name)}" }

    /// The pub/sub channel on which breaker transitions are announced.
    public var circuitBreakerEvents: String { "\(prefix):cb:events" }

    /// A cached entry (a string: ``CacheEntryCodec`` bytes, `PX` = its expiry).
    public func cacheEntry(_ key: String) -> String { "\(prefix):cache:{\(key)}" }

    /// The cluster-wide fill lease of a cache entry (`SET NX PX`, value = the holder's token).
    public func cacheFill(_ key: String) -> String { "\(prefix):cache:{\(key)}:fill" }

    /// Entries carrying a tag: a sorted set of entry keys scored by their expiry (ms).
    public func cacheTag(_ tag: String) -> String { "\(prefix):cache:tag:{\(tag)}" }

    /// Entries of a tool: a sorted set of entry keys scored by their expiry (ms).
    public func cacheTool(_ tool: String) -> String { "\(prefix):cache:tool:{\(tool)}" }

    /// Pub/sub channel of cache writes, invalidations and released fills.
    public var cacheEvents: String { "\(prefix):cache:events" }

    /// An API key's record (canonical JSON, digest in hex — never the key), by its lookup id.
    public func apiKey(_ lookupID: String) -> String { "\(prefix):ak:{\(lookupID)}" }

    /// An API key's lookup id, by the key's operator-facing id (to revoke by id).
    public func apiKeyID(_ id: String) -> String { "\(prefix):akid:{\(id)}" }

    /// Pub/sub channel of API-key changes and revocations: the lookup id.
    public var apiKeyEvents: String { "\(prefix):ak:events" }

    /// The JWKS document last fetched from one endpoint (`url` = SHA-256 of its URL, hex): a hash
    /// with `at` (fetch time, Unix ms) and `doc` (the bytes), expiring after the source's
    /// maximum staleness.
    public func jwksDocument(_ url: String) -> String { "\(prefix):jwks:{\(url)}" }

    /// The right to fetch that endpoint (`SET NX PX` the refetch interval): one replica fetches
    /// per interval, the others read the document it publishes.
    public func jwksFetch(_ url: String) -> String { "\(prefix):jwks:{\(url)}:fetch" }

    /// A token introspection result (RFC 7662), by the SHA-256 of the token (hex; never the
    /// token): canonical JSON of the identity or of the refusal, `PX` no longer than the
    /// token's `exp` (short for refusals).
    public func introspection(_ tokenHash: String) -> String { "\(prefix):introspect:{\(tokenHash)}" }

    /// The cluster's audit trail: a stream of authentication and authorization decisions.
    public var audit: String { "\(prefix):audit" }

    /// One replica's call totals per tool and outcome (canonical JSON), refreshed every second
    /// by its statistics publisher, expiring 10 s after the last: for dashboards and `toolops status`.
    public func replicaStatistics(_ replicaID: String) -> String { "\(prefix):stats:{\(replicaID)}" }

    /// The live replicas: a sorted set of replica ids scored by registration expiry (ms, Redis time).
    public var membersIndex: String { "\(prefix):members:{replicas}" }

    /// What each replica reported: a hash of replica id → canonical JSON of its ``ReplicaInfo``.
    public var membersInfo: String { "\(prefix):members:{replicas}:info" }

    /// `text` with the glob characters of `SCAN MATCH` (`*`, `?`, `[`, `]`, `\\`) escaped, so a
    /// prefix matches only itself.
    public static func globEscaped(_ text: String) -> String {
        var out = ""
        for character in text {
            if "*?[]\\".contains(character) { out.append("\\") }
            out.append(character)
        }
        return out
    }
}
