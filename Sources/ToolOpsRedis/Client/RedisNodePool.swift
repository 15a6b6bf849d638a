import Logging
import Synchronization

/// The command connections to one Redis server: a small pool of lazily connected, pipelined
/// connections (see ``RedisPoolStateMachine``). A standalone client has one; a cluster client
/// one per node it has talked to; a Sentinel client one for the current master.
final class RedisNodePool: Sendable {
    /// The node's endpoint.
    let endpoint: RedisConfiguration.Endpoint
    /// The client's configuration with ``endpoint`` in it.
    let configuration: RedisConfiguration
    private let pool: Mutex<RedisPoolStateMachine<RedisConnection>>
    private let tls: TLSContext?
    private let logger: Logger
    private let instrumentation: RedisInstrumentation
    private let ids: IDSource

    init(
        endpoint: RedisConfiguration.Endpoint, configuration: RedisConfiguration, tls: TLSContext?, logger: Logger,
        instrumentation: RedisInstrumentation, ids: IDSource
    ) {
        var configuration = configuration
        configuration.endpoint = endpoint
        self.endpoint = endpoint
        self.configuration = configuration
        self.tls = tls
        self.logger = logger
        self.instrumentation = instrumentation
        self.ids = ids
        self.pool = Mutex(RedisPoolStateMachine(size: configuration.poolSize))
    }

    /// Picks a connection (see ``RedisPoolStateMachine/choose(now:threshold:maximum:backoff:status:)``):
    /// fill the first one up to ``RedisConfiguration/spreadThreshold`` commands in flight, then
    /// open another, then share the least loaded. Throws without sending anything (during a
    /// reconnect backoff, after shutdown, when every connection is full).
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
        let id = ids.next()
        return try RedisConnection(
            id: id, configuration: configuration, tls: tls, logger: logger, instrumentation: instrumentation,
            onOpen: { [weak self] in self?.connectionOpened(slot: slot, id: id) },
            onClose: { [weak self] error in self?.connectionClosed(slot: slot, id: id, error: error) }
        )
    }

    private func connectionOpened(slot: Int, id: Int) {
        pool.withLock { $0.opened(slot: slot, id: id) }
        logger.debug("redis connection open", metadata: ["redis.connection": "\(id)", "redis.endpoint": "\(endpoint)"])
    }

    private func connectionClosed(slot: Int, id: Int, error: RedisClientError) {
        let reconnect = configuration.reconnect
        let delay = pool.withLock { $0.closed(slot: slot, id: id, error: error, now: .now, backoff: reconnect.delay(afterFailures:)) }
        if error.code == .tlsVerificationFailed {
            // Never routine: a wrong CA or server name — or an interception. Loud, every time.
            logger.error(
                "redis TLS certificate verification failed; commands fail until it is fixed",
                metadata: ["redis.connection": "\(id)", "error": "\(error.message)", "redis.endpoint": "\(endpoint)"])
        } else if let delay {
            logger.warning(
                "redis connection closed",
                metadata: ["redis.connection": "\(id)", "error": "\(error)", "redis.endpoint": "\(endpoint)", "redis.retry_in": "\(delay)"])
        }
    }

    /// Connections open or opening that have not failed or closed.
    var liveConnections: Int {
        pool.withLock { pool in pool.slots.compactMap(\.connection).filter { $0.status.closedError == nil }.count }
    }

    /// Commands waiting or in flight on the pool's connections.
    var commandsInFlight: Int {
        pool.withLock { pool in pool.slots.compactMap(\.connection).reduce(0) { $0 + $1.status.load } }
    }

    var isShutDown: Bool { pool.withLock { $0.isShutDown } }

    /// Stops accepting commands; every connection closes once its in-flight commands are answered.
    func shutdown() {
        for connection in pool.withLock({ $0.shutDown() }) { connection.close() }
    }

    deinit {
        for connection in pool.withLock({ $0.slots.compactMap(\.connection) }) { connection.close() }
    }
}
