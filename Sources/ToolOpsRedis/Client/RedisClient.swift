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
    private let pool: Mutex<RedisPoolStateMachine<RedisConnection>>
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
        self.pool = Mutex(RedisPoolStateMachine(size: configuration.poolSize))
        let ids = IDSource()
        let instrumentation = RedisInstrumentation(factory: metricsFactory ?? MetricsSystem.factory, tracer: tracer)
        self.instrumentation = instrumentation
        self.subscriber = RedisSubscriber(
            configuration: configuration, tls: tls, logger: logger, instrumentation: instrumentation, makeID: { ids.next() })
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
            return try await perform(command, bytes: bytes, on: try connection())
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
        var bytes: [UInt8] = []
        do {
            for command in commands { bytes.append(contentsOf: try checkedForSharing(command)) }
            return try connection().executeUnawaited(bytes, replies: commands.count)
        } catch {
            return false
        }
    }

    /// ``send(_:)-(RedisCommand)`` not cancelled with the caller's task (no `NOSCRIPT` retry):
    /// for a command that must run even when its caller was cancelled, such as returning a slot.
    @discardableResult
    package func sendIgnoringCancellation(_ command: RedisCommand) async throws -> RESPValue {
        let connection = try connection()
        let reply = try await connection.executeIgnoringCancellation(try checkedForSharing(command), replies: 1)
        if case .error(let message) = reply { throw failure(message, on: connection) }
        return reply
    }

    /// The encoding of a command allowed on a shared connection.
    private func checkedForSharing(_ command: RedisCommand) throws(RedisClientError) -> [UInt8] {
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
        var bytes: [UInt8] = []
        bytes.reserveCapacity(commands.reduce(0) { $0 + $1.encoded.count })
        for command in commands { bytes.append(contentsOf: try checkedForSharing(command)) }
        let connection = try connection()
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
            let retried = try await pipelineUnmeasured(retries.map(\.command))
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

    /// Picks a connection (see ``RedisPoolStateMachine/choose(now:threshold:backoff:status:)``):
    /// fill the first one up to ``RedisConfiguration/spreadThreshold`` commands in flight, then
    /// open another, then share the least loaded.
    func connection() throws(RedisClientError) -> RedisConnection {
        let now = ContinuousClock.now
        let (threshold, reconnect) = (configuration.spreadThreshold, configuration.reconnect)
        let maximum = configuration.maximumCommandsPerConnection
        return try pool.withLock { (pool) throws(RedisClientError) -> RedisConnection in
            switch pool.choose(
                now: now, threshold: threshold, maximum: maximum, backoff: reconnect.delay(afterFailures:), status: \.status)
            {
            case .use(let connection):
                return connection
            case .open(let slot):
                let connection = try makeConnection(slot: slot)
                pool.assign(connection, to: slot)
                return connection
            case .fail(let error):
                throw error
            }
        }
    }

    private func makeConnection(slot: Int) throws(RedisClientError) -> RedisConnection {
        let id = nextConnectionID()
        return try RedisConnection(
            id: id, configuration: configuration, tls: tls, logger: logger, instrumentation: instrumentation,
            onOpen: { [weak self] in self?.connectionOpened(slot: slot, id: id) },
            onClose: { [weak self] error in self?.connectionClosed(slot: slot, id: id, error: error) }
        )
    }

    private func connectionOpened(slot: Int, id: Int) {
        pool.withLock { $0.opened(slot: slot, id: id) }
        logger.debug("redis connection open", metadata: ["redis.connection": "\(id)"])
    }

    private func connectionClosed(slot: Int, id: Int, error: RedisClientError) {
        let reconnect = configuration.reconnect
        let delay = pool.withLock { $0.closed(slot: slot, id: id, error: error, now: .now, backoff: reconnect.delay(afterFailures:)) }
        if error.code == .tlsVerificationFailed {
            // Never routine: a wrong CA or server name — or an interception. Loud, every time.
            logger.error(
                "redis TLS certificate verification failed; commands fail until it is fixed",
                metadata: ["redis.connection": "\(id)", "error": "\(error.message)", "redis.endpoint": "\(configuration.endpoint)"])
        } else if let delay {
            logger.warning(
                "redis connection closed",
                metadata: ["redis.connection": "\(id)", "error": "\(error)", "redis.retry_in": "\(delay)"])
        }
    }

    /// Command connections open or opening that have not failed or closed (for tests and
    /// diagnostics: a connection the server dropped leaves this count once its I/O thread saw it).
    package var liveConnections: Int {
        pool.withLock { pool in pool.slots.compactMap(\.connection).filter { $0.status.closedError == nil }.count }
    }

    /// ``shutdown()`` was called.
    var isShutDown: Bool { pool.withLock { $0.isShutDown } }

    /// Commands waiting or in flight on the command connections (for tests and diagnostics).
    package var commandsInFlight: Int {
        pool.withLock { pool in pool.slots.compactMap(\.connection).reduce(0) { $0 + $1.status.load } }
    }

    // MARK: lifecycle

    /// Stops accepting commands and closes every connection once its in-flight commands
    /// are answered. Idempotent.
    public func shutdown() {
        let connections = pool.withLock { $0.shutDown() }
        for connection in connections { connection.close() }
        subscriber.shutdown()
    }

    deinit {
        for connection in pool.withLock({ $0.slots.compactMap(\.connection) }) { connection.close() }
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
        try await subscriber.subscribe(channels: channels, patterns: patterns)
    }

    /// Subscribes with a handler called on the pub/sub connection's I/O thread as each event
    /// arrives — no task scheduling between the socket and the handler, for state that must
    /// follow the channel with the least delay. The handler must be quick and must not block.
    /// Keep the returned handle; ``RedisSubscriptionHandle/cancel()`` unsubscribes.
    public func subscribe(
        to channels: [String], patterns: [String] = [], handler: @escaping @Sendable (RedisPubSubEvent) -> Void
    ) async throws -> RedisSubscriptionHandle {
        try await subscriber.subscribe(channels: channels, patterns: patterns, handler: handler)
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
