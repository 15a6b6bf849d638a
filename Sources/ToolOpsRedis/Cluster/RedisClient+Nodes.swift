extension RedisClient {
    /// The masters commands go to: the server; the master Sentinel names; a cluster's masters
    /// (the slot map is read first if it is not known yet).
    public func masters() async throws -> [RedisConfiguration.Endpoint] {
        if router.standalone == nil, router.masters.isEmpty { await router.refresh() }
        let masters = router.masters
        if masters.isEmpty { throw RedisClientError(.connectionRefused, "no Redis master known (the layout could not be read)") }
        return masters
    }

    /// Sends `command` to the node at `endpoint` as it is: no slot routing, no redirection —
    /// for per-node commands (`SCAN`, `DBSIZE`, `INFO`, `SCRIPT FLUSH`) on each of ``masters()``.
    @discardableResult
    public func send(_ command: RedisCommand, toNode endpoint: RedisConfiguration.Endpoint) async throws -> RESPValue {
        try await instrumentation.measure(command.name) {
            try await perform(command, bytes: try checkedForSharing(command), on: try router.pool(at: endpoint).connection())
        }
    }

    /// Calls `body` with the keys matching `pattern` (a `SCAN … MATCH` glob), a batch at a time,
    /// from every master — on a cluster, each master's keyspace in turn. Keys may repeat
    /// (`SCAN`'s own guarantee) and keys written during the scan may be missed.
    public func scan(matching pattern: String, count: Int = 1_000, _ body: ([[UInt8]]) async throws -> Void) async throws {
        for master in try await masters() {
            var cursor = "0"
            repeat {
                let reply = try await send(RedisCommand("SCAN", cursor, "MATCH", pattern, "COUNT", max(1, count)), toNode: master)
                guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                    throw RedisClientError(.unexpectedReply, "SCAN reply: \(reply)")
                }
                cursor = next
                let keys = parts[1].array?.compactMap(\.bytes) ?? []
                if !keys.isEmpty { try await body(keys) }
            } while cursor != "0"
        }
    }
}
