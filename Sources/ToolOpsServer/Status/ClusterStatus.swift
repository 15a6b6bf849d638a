import ToolOpsCore
import ToolOpsHealth
import ToolOpsObserve
import ToolOpsRedis
import ToolOpsRedisBackend

/// What the cluster looks like now, read from Redis (`toolops status`, the dashboard): live
/// replicas, circuit breakers that are not closed, the busiest rate-limit buckets, the cache's
/// size, call totals per tool, and the stores or checks each replica reports degraded.
///
/// Keys are read with `SCAN` in bounded batches (at most ``Limits/maximumScannedKeys`` per kind),
/// never `KEYS`; a cluster with more keys shows a partial count, marked as such.
public struct ClusterStatus: Sendable {
    public struct Limits: Sendable {
        public var maximumScannedKeys = 10_000
        public var busiestLimits = 10
        public init() {}
    }

    public struct Breaker: Sendable, Hashable {
        public var name: String
        public var state: String
    }

    public struct Limit: Sendable, Hashable {
        public var key: String
        /// How far the bucket's theoretical arrival time is ahead of now: the backlog a full
        /// bucket has to work off (0 for an idle one).
        public var backlog: Duration
    }

    public var replicas: [ReplicaInfo]
    public var breakers: [Breaker]
    public var busiestLimits: [Limit]
    public var cacheEntries: Int
    public var cacheBytes: Int
    /// Whether the key counts stopped at ``Limits/maximumScannedKeys``.
    public var partial: Bool
    /// Tool → outcome → calls, summed over the live replicas.
    public var tools: [String: [String: Int64]]
    /// Replica id → its checks that are not healthy (a degraded store shows here).
    public var degraded: [String: [String: String]]
    public var readAt: ClockInstant

    /// Reads the status of the deployment under `keys.prefix`.
    public static func read(client: RedisClient, keys: RedisKeySchema = .init(), limits: Limits = .init()) async throws -> ClusterStatus {
        let replicas = try await RedisMembershipStore(client: client, keys: keys).members()
        let prefix = RedisKeySchema.globEscaped(keys.prefix)

        var breakers: [Breaker] = []
        let (breakerKeys, breakersPartial) = try await scan(client, "\(prefix):cb:{*", limit: limits.maximumScannedKeys)
        for batch in breakerKeys.chunked(100) {
            let states = try await client.pipeline(batch.map { RedisCommand("HGET", $0, "state") })
            for (key, state) in zip(batch, states) {
                let text = (try? state.get())?.string ?? "closed"
                if text != "closed" { breakers.append(Breaker(name: braced(key), state: text)) }
            }
        }

        var limitsFound: [Limit] = []
        let (limitKeys, limitsPartial) = try await scan(client, "\(prefix):rl:{*", limit: limits.maximumScannedKeys)
        let now = try await client.send("TIME").array.flatMap { parts -> Int64? in
            guard parts.count == 2, let seconds = parts[0].int, let micros = parts[1].int else { return nil }
            return seconds * 1_000_000 + micros
        } ?? 0
        for batch in limitKeys.chunked(100) {
            let values = try await client.pipeline(batch.map { RedisCommand("GET", $0) })
            for (key, value) in zip(batch, values) {
                guard let tat = (try? value.get())?.int else { continue }
                limitsFound.append(Limit(key: braced(key), backlog: .microseconds(max(0, tat - now))))
            }
        }
        limitsFound.sort { $0.backlog > $1.backlog }

        let (cacheKeys, cachePartial) = try await scan(client, "\(prefix):cache:{*", limit: limits.maximumScannedKeys)
        let entries = cacheKeys.filter { $0.hasSuffix("}") }
        var bytes = 0
        for batch in entries.chunked(100) {
            for usage in try await client.pipeline(batch.map { RedisCommand("MEMORY", "USAGE", $0) }) {
                bytes += Int((try? usage.get())?.int ?? 0)
            }
        }

        var snapshots: [JSONValue] = []
        if !replicas.isEmpty {
            // One GET each, pipelined: on a cluster the replicas' keys are in different slots.
            let values = try await client.pipeline(replicas.map { RedisCommand("GET", keys.replicaStatistics($0.id)) })
            for value in values {
                if case .success(.bulkString(let bytes)) = value, let json = try? JSONValue(parsing: bytes, limits: .init(maximumDepth: 4, maximumBytes: 1 << 20)) {
                    snapshots.append(json)
                }
            }
        }
        return ClusterStatus(
            replicas: replicas, breakers: breakers.sorted { $0.name < $1.name }, busiestLimits: Array(limitsFound.prefix(limits.busiestLimits)),
            cacheEntries: entries.count, cacheBytes: bytes, partial: breakersPartial || limitsPartial || cachePartial,
            tools: ToolStatistics.sum(snapshots), degraded: degraded(replicas), readAt: WallClock().now)
    }

    /// The status as JSON (what `toolops status --json` prints and the dashboard reads).
    public var json: JSONValue {
        let now = readAt
        return [
            "readAt": .string(now.rfc3339),
            "replicas": .array(
                replicas.map { replica in
                    [
                        "id": .string(replica.id), "host": .string(replica.host), "port": .integer(Int64(replica.port)),
                        "version": .string(replica.version), "health": .string(replica.health.rawValue),
                        "uptimeSeconds": .integer(max(0, (now.nanoseconds - replica.startedAt.nanoseconds) / 1_000_000_000)),
                    ]
                }),
            "breakers": .array(breakers.map { ["name": .string($0.name), "state": .string($0.state)] }),
            "busiestLimits": .array(
                busiestLimits.map { ["key": .string($0.key), "backlogMs": .integer($0.backlog.nanosecondsClamped / 1_000_000)] }),
            "cache": ["entries": .integer(Int64(cacheEntries)), "bytes": .integer(Int64(cacheBytes))],
            "partial": .bool(partial),
            "tools": .object(tools.mapValues { .object($0.mapValues(JSONValue.integer)) }),
            "degraded": .object(degraded.mapValues { .object($0.mapValues(JSONValue.string)) }),
        ]
    }

    /// Replica id → its checks that are not healthy, as each replica last reported them.
    static func degraded(_ replicas: [ReplicaInfo]) -> [String: [String: String]] {
        var degraded: [String: [String: String]] = [:]
        for replica in replicas where !replica.checks.isEmpty { degraded[replica.id] = replica.checks.mapValues(\.rawValue) }
        return degraded
    }

    /// Up to `limit` keys matching `pattern` (on every master of a cluster), and whether there were more.
    static func scan(_ client: RedisClient, _ pattern: String, limit: Int) async throws -> ([String], Bool) {
        struct Enough: Error {}
        var keys: [String] = []
        do {
            try await client.scan(matching: pattern) { batch in
                for key in batch {
                    if keys.count >= limit { throw Enough() }
                    keys.append(String(decoding: key, as: UTF8.self))
                }
            }
        } catch is Enough {
            return (keys, true)
        }
        return (keys, false)
    }

    /// The `{…}` part of a key (the breaker's or bucket's name).
    static func braced(_ key: String) -> String {
        guard let open = key.firstIndex(of: "{"), let close = key.lastIndex(of: "}"), open < close else { return key }
        return String(key[key.index(after: open)..<close])
    }
}

extension Array {
    func chunked(_ size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
