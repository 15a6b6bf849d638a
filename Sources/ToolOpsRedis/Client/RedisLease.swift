import Synchronization

extension RedisClient {
    /// Runs `body` with a connection of its own, for what must not run on the shared ones:
    /// transactions (`WATCH`/`MULTI`/`EXEC`), blocking commands (`BLPOP`, `XREAD BLOCK`),
    /// `SELECT`, `CLIENT REPLY`. The connection is opened for the lease and closed when `body`
    /// returns or throws — at once, failing a command still waiting (a `BLPOP` whose caller
    /// was cancelled does not hold a connection afterwards).
    ///
    /// ```swift
    /// let result = try await client.withConnection { lease in
    ///     try await lease.send("WATCH", "balance")
    ///     let balance = try await lease.send("GET", "balance").int ?? 0
    ///     try await lease.send("MULTI")
    ///     try await lease.send("SET", "balance", balance - 10)
    ///     return try await lease.send("EXEC")   // .null if "balance" changed meanwhile
    /// }
    /// ```
    ///
    /// - Parameters:
    ///   - commandTimeout: How long each command may wait for its reply; defaults to
    ///     ``RedisConfiguration/commandTimeout``. A blocking command needs a longer one than
    ///     its own timeout argument.
    ///   - body: Uses the lease; it must not keep it (a kept lease fails with
    ///     ``RedisClientError/Code/clientClosed``).
    /// - Throws: ``RedisClientError/Code/overloaded`` when
    ///   ``RedisConfiguration/maximumLeasedConnections`` leases are open, and whatever `body` throws.
    public func withConnection<Value>(
        commandTimeout: Duration? = nil,
        _ body: (RedisLease) async throws -> Value
    ) async throws -> Value {
        if isShutDown { throw RedisClientError(.clientClosed, "the Redis client was shut down") }
        let maximum = configuration.maximumLeasedConnections
        guard acquireLease(maximum: maximum) else {
            throw RedisClientError(.overloaded, "\(maximum) leased Redis connections are open (maximumLeasedConnections)")
        }
        defer { leases.subtract(1, ordering: .relaxed) }
        var configuration = self.configuration
        if router.standalone == nil { configuration.endpoint = try await router.leaseEndpoint() }
        if let commandTimeout {
            guard commandTimeout > .zero else { throw RedisClientError(.invalidConfiguration, "commandTimeout must be positive") }
            configuration.commandTimeout = commandTimeout
        }
        let connection = try RedisConnection(
            id: nextConnectionID(), configuration: configuration, tls: tls, logger: logger, instrumentation: instrumentation)
        defer { connection.abort(RedisClientError(.clientClosed, "the lease ended")) }
        return try await body(RedisLease(client: self, connection: connection))
    }

    private func acquireLease(maximum: Int) -> Bool {
        var current = leases.load(ordering: .relaxed)
        while current < maximum {
            let (exchanged, original) = leases.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }
}

/// A connection of one's own for the duration of ``RedisClient/withConnection(commandTimeout:_:)``.
/// Every command is allowed except those that break the matching of replies to commands:
/// `SUBSCRIBE` and its kin (use ``RedisClient/subscribe(to:patterns:)``), `MONITOR`, `CLIENT REPLY`.
public struct RedisLease: Sendable {
    let client: RedisClient
    let connection: RedisConnection

    /// Sends one command on the leased connection; an error reply is thrown as with
    /// ``RedisClient/send(_:)-(RedisCommand)``.
    @discardableResult
    public func send(_ command: RedisCommand) async throws -> RESPValue {
        if case .never(let reason) = command.scope {
            throw RedisClientError(.connectionScopedCommand, "\(reason); not sent")
        }
        return try await client.perform(command, bytes: try command.checkedEncoding(), on: connection)
    }

    /// Sends `name` with `arguments`; see ``send(_:)-(RedisCommand)``.
    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgumentConvertible...) async throws -> RESPValue {
        try await send(RedisCommand(name, arguments: arguments))
    }
}
