import Logging

/// Master discovery through Redis Sentinel: `SENTINEL get-master-addr-by-name <name>` asked of
/// each sentinel in turn until one answers with an address.
enum RedisSentinel {
    /// The master's address as the first sentinel that knows `name` reports it.
    ///
    /// - Throws: ``RedisClientError/Code/connectionRefused`` (or the last connection error)
    ///   when no sentinel could be reached; ``RedisClientError/Code/serverUnavailable`` when the
    ///   sentinels reached do not know the name. The error names the sentinels, never a password.
    static func master(
        named name: String, sentinels: [RedisConfiguration.Endpoint], configuration: RedisConfiguration, tls: TLSContext?,
        logger: Logger, ids: IDSource
    ) async throws(RedisClientError) -> RedisConfiguration.Endpoint {
        var lastError: RedisClientError? = nil
        var unknownTo: [String] = []
        for sentinel in sentinels {
            var config = configuration
            config.endpoint = sentinel
            config.topology = .standalone
            config.username = nil
            config.password = configuration.sentinelPassword
            config.database = 0
            config.busyPoll = .zero
            let command = RedisCommand("SENTINEL", "get-master-addr-by-name", name)
            let reply: RESPValue
            do {
                let connection = try RedisConnection(id: ids.next(), configuration: config, tls: tls, logger: logger)
                defer { connection.close() }
                reply = try await connection.execute(command.encoded, replies: 1)
            } catch let error as RedisClientError {
                lastError = error
                logger.debug("sentinel not reachable", metadata: ["redis.sentinel": "\(sentinel)", "error": "\(error)"])
                continue
            } catch {
                throw RedisClientError(.clientClosed, "cancelled while asking sentinels for '\(name)'")
            }
            if case .array(let parts) = reply, parts.count == 2, let host = parts[0].string, !host.isEmpty,
                let port = parts[1].int, (1...65535).contains(port)
            {
                return .tcp(host: host, port: Int(port))
            }
            if case .error(let message) = reply { lastError = RedisClientError.reply(message) }
            unknownTo.append("\(sentinel)")
        }
        if !unknownTo.isEmpty {
            throw RedisClientError(
                .serverUnavailable, "no sentinel knows a master named '\(name)' (asked \(unknownTo.joined(separator: ", ")))")
        }
        let reason = lastError.map { "\($0.message)" } ?? "no sentinel configured"
        throw RedisClientError(
            lastError?.code == .authenticationFailed ? .authenticationFailed : .connectionRefused,
            "no sentinel reachable for '\(name)' (\(sentinels.map(\.description).joined(separator: ", "))): \(reason)")
    }
}
