/// Sending on a Redis Cluster or through Sentinel: the command goes to the node the router
/// names; `MOVED` updates the slot map and `ASK` sends `ASKING` + the command to the node
/// named, once; `TRYAGAIN`, `CLUSTERDOWN`, `READONLY`, `LOADING`, `MASTERDOWN` and failures
/// to reach a node are retried with a short backoff for up to
/// ``RedisConfiguration/unavailableRetryBudget``, the layout refreshed in between.
///
/// Only commands that did not run are retried: every reply retried above says the server did
/// not execute it, and a connection failure is retried only when the connection never opened
/// (connect refused or timed out, name not resolved) or no connection was available. A
/// connection that broke with the command in flight fails it (it may have run): retrying a
/// rate-limit script there could count a call twice.
extension RedisClient {
    /// The most redirections (`MOVED`, `ASK`) one command follows.
    static let maximumRedirections = 5

    private static let askingBytes = RedisCommand("ASKING").encoded

    /// Error replies after which a command is retried: the server did not run it.
    static let retriedReplies: Set<Substring> = ["TRYAGAIN", "CLUSTERDOWN", "READONLY", "LOADING", "MASTERDOWN"]

    func routed(_ command: RedisCommand, bytes: [UInt8]) async throws -> RESPValue {
        let started = ContinuousClock.now
        var redirections = 0
        var pauses = 0
        var asking: RedisConfiguration.Endpoint? = nil
        while true {
            var target: RedisNodePool? = nil
            var sent = false
            let reply: RESPValue
            do {
                let pool: RedisNodePool
                if let asking { pool = try router.pool(at: asking) } else { pool = try await router.pool(for: command.routing) }
                target = pool
                let connection = try pool.connection()
                sent = true
                reply = try await execute(command, bytes: bytes, on: connection, asking: asking != nil)
            } catch let error as RedisClientError {
                let retried: Bool
                switch error.code {
                case .crossSlot, .overloaded, .invalidConfiguration, .authenticationFailed, .tlsVerificationFailed:
                    retried = false
                case .connectionRefused, .connectTimeout, .addressResolution:
                    retried = true
                default:
                    // Not sent: no connection to be had (backoff, retired pool); unknown layout.
                    retried = !sent && error.isUnavailable
                }
                if error.isUnavailable { router.layoutMayHaveChanged() }
                guard retried, !router.isShutDown, try await pause(&pauses, since: started) else { throw error }
                asking = nil
                continue
            }
            guard case .error(let message) = reply else { return reply }
            if redirections < Self.maximumRedirections, let from = target?.endpoint, let redirection = RedisRedirection(message, from: from) {
                redirections += 1
                switch redirection.kind {
                case .moved:
                    router.moved(slot: redirection.slot, to: redirection.endpoint)
                    asking = nil
                case .ask:
                    asking = redirection.endpoint
                }
                continue
            }
            asking = nil
            let prefix = message.prefix { $0 != " " }
            if Self.retriedReplies.contains(prefix) {
                if prefix != "TRYAGAIN" && prefix != "LOADING" { router.layoutMayHaveChanged() }
                if try await pause(&pauses, since: started) { continue }
            }
            throw RedisClientError.reply(message)
        }
    }

    /// Waits before the next attempt (10 ms doubling to 160 ms, the layout refreshed first when
    /// due); `false` when the retry budget is spent. Throws when the caller is cancelled.
    private func pause(_ pauses: inout Int, since started: ContinuousClock.Instant) async throws -> Bool {
        let budget = configuration.unavailableRetryBudget
        guard ContinuousClock.now - started < budget else { return false }
        pauses += 1
        await router.refreshIfDue()
        let delay = Duration.milliseconds(10 << min(pauses - 1, 4))
        let left = budget - (ContinuousClock.now - started)
        guard left > .zero else { return false }
        try await Task.sleep(for: min(delay, left))
        return true
    }

    /// Runs `command` on `connection` (after `ASKING` when asked to); `NOSCRIPT` retried with `EVAL`.
    private func execute(_ command: RedisCommand, bytes: [UInt8], on connection: RedisConnection, asking: Bool) async throws -> RESPValue {
        let reply: RESPValue
        if asking {
            guard case .array(let both) = try await connection.execute(Self.askingBytes + bytes, replies: 2), both.count == 2 else {
                throw RedisClientError(.protocolError, "pipeline reply count mismatch")
            }
            reply = both[1]
        } else {
            reply = try await connection.execute(bytes, replies: 1)
        }
        if case .error(let message) = reply, let call = command.script, message.hasPrefix("NOSCRIPT") {
            // Scripts are not replicated: a promoted replica has never seen ours.
            let eval = RedisCommand.eval(call)
            return try await execute(eval, bytes: try eval.checkedEncoding(), on: connection, asking: asking)
        }
        return reply
    }

    /// A pipeline on a cluster: the commands are grouped by the node serving their slot, each
    /// group sent in one write (the groups concurrently), and the replies put back in order.
    /// Commands redirected or refused for now (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, …)
    /// and those of a group whose node could not be reached are then sent one by one with the
    /// routing and retries of ``send(_:)-(RedisCommand)``; a group whose connection broke with
    /// its commands in flight fails those commands only. With Sentinel: one group, the master.
    func routedPipeline(_ commands: [RedisCommand]) async throws -> [Result<RESPValue, RedisClientError>] {
        var results = [Result<RESPValue, RedisClientError>?](repeating: nil, count: commands.count)
        var groups: [RedisConfiguration.Endpoint: (pool: RedisNodePool, indices: [Int])] = [:]
        for (index, command) in commands.enumerated() {
            do throws(RedisClientError) {
                _ = try checkedForSharing(command)
                let pool = try await router.pool(for: command.routing)
                groups[pool.endpoint, default: (pool, [])].indices.append(index)
            } catch {
                // Cross-slot, too large, connection-scoped: fails alone. Layout unknown: retried below.
                if !error.isUnavailable { results[index] = .failure(error) }
            }
        }
        let groupList = Array(groups.values)
        try await withThrowingTaskGroup(of: [(Int, Result<RESPValue, RedisClientError>)].self) { group in
            for (pool, indices) in groupList {
                group.addTask {
                    let connection: RedisConnection
                    do { connection = try pool.connection() } catch { return [] }  // not sent: one by one below
                    do {
                        return Array(zip(indices, try await self.pipelined(indices.map { commands[$0] }, on: connection)))
                    } catch let error as RedisClientError {
                        // The connection never opened: nothing ran, one by one below. Otherwise
                        // this node's commands may have run: they fail, the other nodes' results
                        // stand (a caller retrying the whole batch would run those twice).
                        if [.connectionRefused, .connectTimeout, .addressResolution].contains(error.code) { return [] }
                        return indices.map { ($0, .failure(error)) }
                    }
                }
            }
            for try await pairs in group { for (index, result) in pairs { results[index] = result } }
        }
        var answered: [Result<RESPValue, RedisClientError>] = []
        answered.reserveCapacity(commands.count)
        for (index, result) in results.enumerated() {
            if let result, !Self.isRetried(result) {
                answered.append(result)
            } else {
                do {
                    answered.append(.success(try await routed(commands[index], bytes: try checkedForSharing(commands[index]))))
                } catch let error as RedisClientError {
                    answered.append(.failure(error))
                }
            }
        }
        return answered
    }

    /// Whether a pipelined command's result must be sent again alone (`nil`: not sent at all).
    private static func isRetried(_ result: Result<RESPValue, RedisClientError>?) -> Bool {
        guard let result else { return true }
        guard case .failure(let error) = result, let prefix = error.serverErrorPrefix else { return false }
        return prefix == "MOVED" || prefix == "ASK" || retriedReplies.contains(prefix)
    }
}
