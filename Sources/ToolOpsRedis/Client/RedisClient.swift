import Logging
import Metrics
import Synchronization
import Tracing

/// A Redis client: a small pool of lazily connected, automatically pipelined connections.
///
/// Safe to share between any number of tasks. Each connection does its socket I/O on its
/// own thread; concurrent commands on one connection are written together and their
/// replies matched in order, so one connection serves many callers.
///
/// ```swift
/// let client = try RedisClient(url: "redis://127.0.0.1:6379")
/// try await client.send("SET", "greeting", "hello")
/// let reply = try await client.send("GET", "greeting")   // .bulkString("hello")
/// ```
///
/// Errors are ``RedisClientError``s; ``RedisClientError/isUnavailable`` separates "Redis
/// could not be reached" from "Redis said no". When a connection breaks, every command in
/// flight on it fails at once; the next command reconnects, with exponential backoff and
/// jitter after repeated failures (during a backoff pause commands fail fast with the last
/// connection error instead of waiting).
public final class RedisClient: Sendable {
    /// The configuration the client was created with.
    public let configuration: RedisConfiguration
    let logger: Logger
    let tls: TLSContext?
    /// The node pools and, on a cluster or Sentinel, the layout.
    let router: RedisRouter
    let subscriber: RedisSubscriber
    /// Metrics and spans of every command (see ``RedisInstrumentation``).
    let instrumentation: RedisInstrumentation

    /// Creates a client. Nothing connects until the first command.
    ///
    /// - Parameters:
    ///   - metricsFactory: where the client's metrics go (see `Docs/observe.md`). Defaults to
    ///     `MetricsSystem.factory` as bootstrapped now.
    ///   - tracer: where spans of commands sent inside a trace context go. Defaults to the
    ///     tracer bootstrapped in `InstrumentationSystem` when each command is sent.
    public init(
        configuration: RedisConfiguration, logger: Logger = Logger(label: "toolops.redis"), metricsFactory: (any MetricsFactory)? = nil,
        tracer: (any Tracer)? = nil
    ) throws(RedisClientError) {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        do {
            self.tls = configuration.tls.isEnabled ? try TLSContext(configuration.tls) : nil
        } catch let error as RedisClientError {
            throw error
        } catch {
            throw RedisClientError(.tlsFailure, "\(error)")
        }
        let ids = IDSource()
        let instrumentation = RedisInstrumentation(factory: metricsFactory ?? MetricsSystem.factory, tracer: tracer)
        self.instrumentation = instrumentation
        let tls = self.tls
        let router = RedisRouter(
            configuration: configuration, logger: logger,
            makePool: { endpoint in
                RedisNodePool(
                    endpoint: endpoint, configuration: configuration, tls: tls, logger: logger, instrumentation: instrumentation, ids: ids)
            },
            askSentinels: { () throws(RedisClientError) in
                guard case .sentinel(let name, let sentinels) = configuration.topology else { return configuration.endpoint }
                return try await RedisSentinel.master(
                    named: name, sentinels: sentinels, configuration: configuration, tls: tls, logger: logger, ids: ids)
            })
        self.router = router
        self.subscriber = RedisSubscriber(
            configuration: configuration, tls: tls, logger: logger, instrumentation: instrumentation, makeID: { ids.next() },
            endpoint: { () throws(RedisClientError) in try router.subscriptionEndpoint() })
        self.ids = ids
    }

    /// Creates a client from a URL (see ``RedisConfiguration/init(url:)``).
    public convenience init(url: String, logger: Logger = Logger(label: "toolops.redis")) throws(RedisClientError) {
        try self.init(configuration: RedisConfiguration(url: url), logger: logger)
    }

    private let ids: IDSource
    /// Connections leased through ``withConnection(commandTimeout:_:)`` right now.
    let leases = Atomic<Int>(0)
    func nextConnectionID() -> Int { ids.next() }

    // MARK: commands

    /// Sends one command and returns its reply. An error reply is thrown as
    /// ``RedisClientError/Code/serverError`` — or ``RedisClientError/Code/serverUnavailable``
    /// for `READONLY`, `LOADING`, `BUSY`, `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`.
    ///
    /// Commands that change or hold their connection (`MULTI`, `WATCH`, `SELECT`, `CLIENT REPLY`,
    /// `SUBSCRIBE`, `BLPOP`, …) are refused with ``RedisClientError/Code/connectionScopedCommand``:
    /// the connections are shared by every caller. Use ``withConnection(commandTimeout:_:)``.
    @discardableResult
    public func send(_ command: RedisCommand) async throws -> RESPValue {
        try await instrumentation.measure(command.name) {
            let bytes = try checkedForSharing(command)
            if let pool = router.standalone {
                return try await perform(command, bytes: bytes, on: try pool.connection())
            }
            return try await routed(command, bytes: bytes)
        }
    }

    /// Sends `command` on `connection`; an error reply is thrown, `NOSCRIPT` retried with `EVAL`.
    func perform(_ command: RedisCommand, bytes: [UInt8], on connection: RedisConnection) async throws -> RESPValue {
        let reply = try await connection.execute(bytes, replies: 1)
        if case .error(let message) = reply {
            if let call = command.script, message.hasPrefix("NOSCRIPT") {
                let eval = RedisCommand.eval(call)
                return try await perform(eval, bytes: try eval.checkedEncoding(), on: connection)
            }
            throw failure(message, on: connection)
        }
        return reply
    }

    /// Sends `commands` in one write and returns at once, without waiting for (or seeing) the
    /// replies — for give-backs whose caller has already moved on (a slot granted after the
    /// caller stopped waiting). The replies are read and dropped by the connection, which shuts
    /// down only after them. `false` if they could not be queued (no connection now); nothing
    /// retries them.
    @discardableResult
    package func sendUnawaited(_ commands: [RedisCommand]) -> Bool {
        do {
            guard let pool = router.standalone else {
                // Routed one by one (their slots may differ), only where the layout is known.
                var queued = true
                for command in commands {
                    let bytes = try checkedForSharing(command)
                    guard let pool = try router.knownPool(for: command.routing) else { queued = false; continue }
                    queued = try pool.connection().executeUnawaited(bytes, replies: 1) && queued
                }
                return queued
            }
            var bytes: [UInt8] = []
            for command in commands { bytes.append(contentsOf: try checkedForSharing(command)) }
            return try pool.connection().executeUnawaited(bytes, replies: commands.count)
        } catch {
            return false
        }
    }

    /// ``send(_:)-(RedisCommand)`` not cancelled with the caller's task (no `NOSCRIPT` retry):
    /// for a command that must run even when its caller was cancelled, such as returning a slot.
    @discardableResult
    package func sendIgnoringCancellation(_ command: RedisCommand) async throws -> RESPValue {
        let bytes = try checkedForSharing(command)
        var redirects = 0
        while true {
            let pool = try await router.pool(for: command.routing, evenIfCancelled: true)
            let connection = try pool.connection()
            let reply = try await connection.executeIgnoringCancellation(bytes, replies: 1)
            if case .error(let message) = reply {
                if redirects < 3, let redirection = RedisRedirection(message, from: pool.endpoint), redirection.kind == .moved {
                    redirects += 1
                    router.moved(slot: redirection.slot, to: redirection.endpoint)
                    continue
                }
                throw failure(message, on: connection)
            }
            return reply
        }
    }

    /// The encoding of a command allowed on a shared connection.
    func checkedForSharing(_ command: RedisCommand) throws(RedisClientError) -> [UInt8] {
        switch command.scope {
        case .shared: break
        case .leased(let reason):
            throw RedisClientError(
                .connectionScopedCommand,
                "\(reason); the client's connections are shared by every caller, so it was not sent: run it in withConnection { … }")
        case .never(let reason):
            throw RedisClientError(.connectionScopedCommand, "\(reason); not sent")
        }
        return try command.checkedEncoding()
    }

    /// The error for an error reply. `READONLY` means this connection reached a replica (the
    /// old primary after a failover behind a DNS name): it is closed once its in-flight
    /// commands are answered, so the next connection resolves the name again.
    private func failure(_ message: String, on connection: RedisConnection) -> RedisClientError {
        if message.hasPrefix("READONLY") { connection.close() }
        return RedisClientError.reply(message)
    }

    /// Sends `name` with `arguments`; see ``send(_:)-(RedisCommand)``.
    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgumentConvertible...) async throws -> RESPValue {
        try await send(RedisCommand(name, arguments: arguments))
    }

    /// Sends several commands in one write and returns their replies in order, each as a
    /// `Result` so one error reply does not hide the others. Throws only when the batch
    /// could not be run (connection failure, timeout, cancellation).
    ///
    /// ```swift
    /// let replies = try await client.pipeline([RedisCommand("INCR", "a"), RedisCommand("GET", "b")])
    /// ```
    public func pipeline(_ commands: [RedisCommand]) async throws -> [Result<RESPValue, RedisClientError>] {
        if commands.isEmpty { return [] }
        return try await instrumentation.measure("PIPELINE") { try await pipelineUnmeasured(commands) }
    }

    private func pipelineUnmeasured(_ commands: [RedisCommand]) async throws -> [Result<RESPValue, RedisClientError>] {
        guard let pool = router.standalone else { return try await routedPipeline(commands) }
        return try await pipelined(commands, on: pool.connection())
    }

    /// Sends `commands` in one write on `connection`; `NOSCRIPT` replies retried with `EVAL` in a second write.
    func pipelined(_ commands: [RedisCommand], on connection: RedisConnection) async throws -> [Result<RESPValue, RedisClientError>] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(commands.reduce(0) { $0 + $1.encoded.count })
        for command in commands { bytes.append(contentsOf: try checkedForSharing(command)) }
        let reply = try await connection.execute(bytes, replies: commands.count)
        // One expected reply comes back bare; several come back collected in an array.
        let replies: [RESPValue]
        if commands.count == 1 {
            replies = [reply]
        } else if case .array(let collected) = reply, collected.count == commands.count {
            replies = collected
        } else {
            throw RedisClientError(.protocolError, "pipeline reply count mismatch")
        }
        var results: [Result<RESPValue, RedisClientError>] = []
        results.reserveCapacity(replies.count)
        var retries: [(index: Int, command: RedisCommand)] = []
        for (index, reply) in replies.enumerated() {
            if case .error(let message) = reply {
                if let call = commands[index].script, message.hasPrefix("NOSCRIPT") {
                    retries.append((index, RedisCommand.eval(call)))
                }
                results.append(.failure(failure(message, on: connection)))
            } else {
                results.append(.success(reply))
            }
        }
        if !retries.isEmpty {
            let retried = try await pipelined(retries.map(\.command), on: connection)
            for (retry, result) in zip(retries, retried) { results[retry.index] = result }
        }
        return results
    }

    /// Runs `script` with `EVALSHA`, loading it transparently on `NOSCRIPT`.
    @discardableResult
    public func run(
        _ script: RedisScript,
        keys: [any RedisArgumentConvertible] = [],
        arguments: [any RedisArgumentConvertible] = []
    ) async throws -> RESPValue {
        try await send(.evalSHA(script, keys: keys, arguments: arguments))
    }

    // MARK: pool

    /// A connection of the standalone pool (tests), or of the pool that runs keyless commands.
    func connection() throws(RedisClientError) -> RedisConnection {
        if let pool = router.standalone { return try pool.connection() }
        guard let pool = try router.knownPool(for: .anyNode) else {
            throw RedisClientError(.connectionRefused, "the Redis layout is not known yet")
        }
        return try pool.connection()
    }

    /// Command connections open or opening that have not failed or closed (for tests and
    /// diagnostics: a connection the server dropped leaves this count once its I/O thread saw it).
    package var liveConnections: Int { router.pools.reduce(0) { $0 + $1.liveConnections } }

    /// ``shutdown()`` was called.
    var isShutDown: Bool { router.isShutDown }

    /// Commands waiting or in flight on the command connections (for tests and diagnostics).
    package var commandsInFlight: Int { router.pools.reduce(0) { $0 + $1.commandsInFlight } }

    // MARK: lifecycle

    /// Stops accepting commands and closes every connection once its in-flight commands
    /// are answered. Idempotent.
    public func shutdown() {
        router.shutdown()
        subscriber.shutdown()
    }

    deinit {
        subscriber.shutdown()
    }
}

/// Connection ids, unique within a client, for logs.
final class IDSource: Sendable {
    private let counter = Atomic<Int>(0)
    func next() -> Int { counter.add(1, ordering: .relaxed).newValue }
}

extension RedisClient {
    /// Subscribes to `channels` (and `patterns`, with `PSUBSCRIBE`) on the client's pub/sub
    /// connection. Returns once the server has confirmed. The subscription is restored
    /// after a reconnect (see ``RedisPubSubEvent``); iterate until done, then drop it.
    ///
    /// ```swift
    /// let subscription = try await client.subscribe(to: ["invalidations"])
    /// for await event in subscription {
    ///     if case .message(let message) = event { print(message.text) }
    /// }
    /// ```
    public func subscribe(to channels: [String], patterns: [String] = []) async throws -> RedisSubscription {
        await knowTheMaster()
        return try await subscriber.subscribe(channels: channels, patterns: patterns)
    }

    /// Subscribes with a handler called on the pub/sub connection's I/O thread as each event
    /// arrives — no task scheduling between the socket and the handler, for state that must
    /// follow the channel with the least delay. The handler must be quick and must not block.
    /// Keep the returned handle; ``RedisSubscriptionHandle/cancel()`` unsubscribes.
    public func subscribe(
        to channels: [String], patterns: [String] = [], handler: @escaping @Sendable (RedisPubSubEvent) -> Void
    ) async throws -> RedisSubscriptionHandle {
        await knowTheMaster()
        return try await subscriber.subscribe(channels: channels, patterns: patterns, handler: handler)
    }

    /// With Sentinel, asks for the master first if it is not known yet (pub/sub goes there).
    private func knowTheMaster() async {
        if router.standalone == nil, (try? router.subscriptionEndpoint()) == nil { await router.refresh() }
    }
}

extension RedisClient {
    /// Calls per command so far on the server, from `INFO commandstats` (keys like `get`,
    /// `evalsha`, `client|setname`) — for counting round trips in benchmarks and checks.
    public func commandCalls() async throws -> [String: Int] {
        let info = try await send("INFO", "commandstats").string ?? ""
        var calls: [String: Int] = [:]
        for line in info.split(separator: "\r\n") where line.hasPrefix("cmdstat_") {
            guard let colon = line.firstIndex(of: ":"),
                let count = line.split(separator: "calls=").dropFirst().first?.split(separator: ",").first.flatMap({ Int($0) })
            else { continue }
            calls[String(line[line.index(line.startIndex, offsetBy: 8)..<colon])] = count
        }
        return calls
    }
}
