import Logging
import ServiceLifecycle
import Synchronization
import ToolOpsCache
import ToolOpsCore
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsResilience

/// Redis as the shared state of a ToolOps cluster: one client, one key schema, and every
/// Redis store made from them — and the one ServiceLifecycle `Service` to run for all of them.
///
/// Running it (in a `ServiceGroup`) runs the background work of every store it made: the
/// cache's and the breakers' pub/sub subscriptions, the breakers' outcome flusher, and the
/// fallback stores' probes. On graceful shutdown it stops them (queued breaker outcomes are
/// sent first) and then shuts the client down. Stores made after it started are run at once.
///
/// ```swift
/// let redis = try RedisBackend(url: "redis://redis.internal:6379")
/// let limits = try redis.makeFallbackRateLimitStore(mode: .local(scale: 1.0 / 3))
/// let cache = try redis.makeFallbackCacheStore()
/// try health.register("redis", redis.makeHealthCheck())
/// // First in the group: started first, stopped last (after the server has drained).
/// try await ServiceGroup(configuration: .init(services: [redis, app], logger: logger)).run()
/// ```
public final class RedisBackend: Service, Sendable {
    public struct Configuration: Sendable {
        /// Key names; give each deployment sharing a Redis its own prefix. Defaults to the
        /// `toolops` prefix.
        public var keys: RedisKeySchema
        /// Outcome batching, quorum and replica id of the breaker stores. Defaults to
        /// ``RedisCircuitBreakerStore/Configuration/init(flushInterval:quorum:replicaID:)``.
        public var circuitBreaker: RedisCircuitBreakerStore.Configuration
        /// The cache stores' near cache and bounds (their `keys` are replaced by ``keys``).
        /// Defaults to ``RedisCacheStore/Configuration/init(keys:nearCache:maximumSetMembers:invalidationBatch:pollInterval:)``.
        public var cache: RedisCacheStore.Configuration
        /// The longest wait for Redis per call in the fallback stores made here. Defaults to 100 ms.
        public var fallbackDeadline: Duration
        /// How often a degraded fallback store tries Redis again. Defaults to 1 s.
        public var probeInterval: Duration
        /// How the rate-limit stores lease busy buckets. Defaults to
        /// ``RedisRateLimitStore/Leasing/init(window:maximumBuckets:)``.
        public var rateLimitLeasing: RedisRateLimitStore.Leasing
        /// How the bulkhead stores keep released slots for this replica's next call. Defaults
        /// to ``RedisBulkheadStore/Reuse/init(hold:divisor:)``.
        public var bulkheadReuse: RedisBulkheadStore.Reuse

        public init(
            keys: RedisKeySchema = .init(), circuitBreaker: RedisCircuitBreakerStore.Configuration = .init(),
            cache: RedisCacheStore.Configuration = .init(), fallbackDeadline: Duration = .milliseconds(100),
            probeInterval: Duration = .seconds(1), rateLimitLeasing: RedisRateLimitStore.Leasing = .init(),
            bulkheadReuse: RedisBulkheadStore.Reuse = .init()
        ) {
            self.rateLimitLeasing = rateLimitLeasing
            self.bulkheadReuse = bulkheadReuse
            self.keys = keys
            self.circuitBreaker = circuitBreaker
            self.cache = cache
            self.fallbackDeadline = fallbackDeadline
            self.probeInterval = probeInterval
        }
    }

    /// Background work of a store, run by ``run()``.
    typealias Job = @Sendable () async -> Void

    struct State {
        var fallbacks: [any FallbackStore] = []
        var started = false
    }

    /// The client every store uses; ``run()`` shuts it down at the end.
    public let client: RedisClient
    public let configuration: Configuration
    let logger: Logger
    private let state = Mutex(State())
    /// Jobs waiting for ``run()`` (buffered until it starts; then run as they come).
    private let jobs = AsyncStream<Job>.makeStream()

    public var keys: RedisKeySchema { configuration.keys }

    /// A backend on `client`, which it owns from now on (``run()`` shuts it down).
    public init(client: RedisClient, configuration: Configuration = .init(), logger: Logger = Logger(label: "toolops.redis")) {
        self.client = client
        self.configuration = configuration
        self.logger = logger
    }

    /// A backend with a client for `url` (see ``RedisConfiguration/init(url:)``).
    public convenience init(url: String, configuration: Configuration = .init(), logger: Logger = Logger(label: "toolops.redis")) throws {
        self.init(client: try RedisClient(url: url, logger: logger), configuration: configuration, logger: logger)
    }

    // MARK: stores

    /// Cluster-wide rate limits (GCRA in one script per decision; busy buckets leased). Its
    /// refills ahead of need run with this backend.
    public func makeRateLimitStore() -> RedisRateLimitStore {
        let store = RedisRateLimitStore(client: client, keys: keys, leasing: configuration.rateLimitLeasing)
        schedule { await store.run() }
        return store
    }

    /// Cluster-wide bulkheads (leases that expire with a crashed replica). Its slot reuse runs
    /// with this backend.
    public func makeBulkheadStore() -> RedisBulkheadStore {
        let store = RedisBulkheadStore(client: client, keys: keys, reuse: configuration.bulkheadReuse)
        schedule { await store.run() }
        return store
    }

    /// Cluster-wide circuit breakers, with a local view per replica kept current by pub/sub.
    /// Its subscription and outcome flusher run with this backend.
    public func makeCircuitBreakerStore(observer: ResilienceObserver? = nil) -> RedisCircuitBreakerStore {
        let store = RedisCircuitBreakerStore(
            client: client, keys: keys, configuration: configuration.circuitBreaker, observer: observer, logger: logger)
        schedule { try? await store.run() }
        return store
    }

    /// The shared result cache, with its near cache kept coherent by pub/sub (the
    /// subscription runs with this backend).
    public func makeCacheStore() throws(ToolOpsError) -> RedisCacheStore {
        var cacheConfiguration = configuration.cache
        cacheConfiguration.keys = keys
        let store = try RedisCacheStore(client: client, configuration: cacheConfiguration)
        schedule { try? await store.run() }
        return store
    }

    /// The cluster's replica registry.
    public func makeMembershipStore() -> RedisMembershipStore { RedisMembershipStore(client: client, keys: keys) }

    /// API keys shared by every replica; ``run()`` follows its change channel, so a key revoked
    /// on one replica is refused on every other within a pub/sub round trip.
    public func makeAPIKeyStore() -> RedisAPIKeyStore {
        let store = RedisAPIKeyStore(client: client, keys: keys)
        schedule { try? await store.run() }
        return store
    }

    /// JWKS documents and the right to fetch them, shared by the replicas: pass it to
    /// `JWKSKeySource(_:shared:)` so the cluster fetches an endpoint once per interval.
    public func makeJWKSDocumentStore() -> RedisJWKSDocumentStore { RedisJWKSDocumentStore(client: client, keys: keys) }

    /// Token introspection verdicts shared by the replicas: pass it to
    /// `IntrospectionAuthenticator(_:cache:)`.
    public func makeIntrospectionCache() -> RedisIntrospectionCache { RedisIntrospectionCache(client: client, keys: keys) }

    // MARK: fallback stores

    /// A Redis rate-limit store that falls back to `fallback` (or fails open or closed) while
    /// Redis is unreachable; its probes run with this backend and its state shows in
    /// ``makeHealthCheck(configuration:)``.
    public func makeFallbackRateLimitStore(
        mode: DegradedMode = .local(), fallback: any RateLimitStore = MemoryRateLimitStore(), observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) -> FallbackRateLimitStore {
        try register(
            FallbackRateLimitStore(
                primary: makeRateLimitStore(), fallback: fallback, mode: mode, deadline: configuration.fallbackDeadline,
                probeInterval: configuration.probeInterval, observer: observer))
    }

    /// A Redis bulkhead store with a fallback (see ``makeFallbackRateLimitStore(mode:fallback:observer:)``).
    public func makeFallbackBulkheadStore(
        mode: DegradedMode = .local(), fallback: any BulkheadStore = MemoryBulkheadStore(), observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) -> FallbackBulkheadStore {
        try register(
            FallbackBulkheadStore(
                primary: makeBulkheadStore(), fallback: fallback, mode: mode, deadline: configuration.fallbackDeadline,
                probeInterval: configuration.probeInterval, observer: observer))
    }

    /// A Redis circuit-breaker store with a fallback (see ``makeFallbackRateLimitStore(mode:fallback:observer:)``).
    public func makeFallbackCircuitBreakerStore(
        mode: DegradedMode = .local(), fallback: any CircuitBreakerStore = MemoryCircuitBreakerStore(),
        observer: ResilienceObserver? = nil
    ) throws(ToolOpsError) -> FallbackCircuitBreakerStore {
        try register(
            FallbackCircuitBreakerStore(
                primary: makeCircuitBreakerStore(observer: observer), fallback: fallback, mode: mode,
                deadline: configuration.fallbackDeadline, probeInterval: configuration.probeInterval, observer: observer))
    }

    /// A Redis cache store with a local fallback (see ``FallbackCacheStore``).
    public func makeFallbackCacheStore(
        mode: DegradedMode = .local(), fallback: any CacheStore = MemoryCacheStore(), observer: FailoverObserver? = nil
    ) throws(ToolOpsError) -> FallbackCacheStore {
        try register(
            FallbackCacheStore(
                primary: makeCacheStore(), fallback: fallback, mode: mode, deadline: configuration.fallbackDeadline,
                probeInterval: configuration.probeInterval, observer: observer))
    }

    /// Runs `store`'s probes (a Redis `PING` every probe interval while it is degraded) with
    /// this backend and includes it in ``makeHealthCheck(configuration:)``. The `make…` methods
    /// do this for the stores they make; call it for fallback stores of your own.
    @discardableResult
    public func register<Store: FallbackStore>(_ store: Store) -> Store {
        state.withLock { $0.fallbacks.append(store) }
        let client = self.client
        schedule { await cancelWhenGracefulShutdown { await store.runProbes { try await client.send("PING") } } }
        return store
    }

    /// The fallback stores registered so far.
    public var fallbackStores: [any FallbackStore] { state.withLock { $0.fallbacks } }

    /// A health check of Redis (`PING`) that is also `degraded` while any fallback store of
    /// this backend — including ones made later — is on its fallback.
    public func makeHealthCheck(configuration: RedisHealthCheck.Configuration = .init()) -> RedisHealthCheck {
        RedisHealthCheck(client: client, fallbacks: FallbackStoresHealthCheck { [self] in fallbackStores }, configuration: configuration)
    }

    // MARK: Service

    private func schedule(_ job: @escaping Job) { jobs.continuation.yield(job) }

    /// Runs the background work of every store made by this backend (and of stores made while
    /// it runs) until graceful shutdown or cancellation; then shuts the client down. Call it
    /// once, or add the backend to a `ServiceGroup` (first, so that it stops last).
    public func run() async throws {
        let alreadyStarted = state.withLock { state -> Bool in
            defer { state.started = true }
            return state.started
        }
        if alreadyStarted { throw ToolOpsError(.invalidConfiguration, "a RedisBackend runs once") }
        let (jobs, continuation) = self.jobs
        let client = self.client
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await client.maintainSubscriptions() }
                // Each job ends by itself at graceful shutdown (it sees the group's shutdown
                // signal too) or when cancelled; no new job is taken after that.
                for await job in jobs { group.addTask { await job() } }
            }
        } onGracefulShutdown: {
            continuation.finish()
        }
        client.shutdown()
        // Commands in flight get their replies and connections close before we return.
        await client.drained()
    }
}
