import Logging
import Metrics
import ServiceLifecycle
import ToolOpsAuth
import ToolOpsCache
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsHealth
import ToolOpsObserve
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience

/// The tool pipeline of a ``ToolOpsConfiguration``: the tools, the stores on the configured
/// backend (memory, files, or Redis with each policy's degraded mode), the middlewares in the
/// documented order — observe → auth → rate limit → cache → retry → circuit breaker → bulkhead
/// → timeout → tool — and the services they need.
///
/// For your own Hummingbird application:
/// ```swift
/// let assembly = try ToolOpsAssembly(configuration, replicaID: "api-1", tools: myTools)
/// assembly.routes.register(on: router)             // POST /v1/tools/…, GET /v1/tools
/// let services = assembly.services + [app]          // run them in one ServiceGroup
/// ```
public struct ToolOpsAssembly: Sendable {
    public let configuration: ToolOpsConfiguration
    public let registry: ToolRegistry
    public let pipeline: ToolPipeline
    public let routes: ToolRoutes
    /// The Redis backend with ``ToolOpsConfiguration/Backend/redis(_:)``.
    public let backend: RedisBackend?
    /// The replica registry's store (Redis, else this process).
    public let membership: any MembershipStore
    /// Background work, in start order: the Redis backend (first started, last stopped), the
    /// store sweeper, the JWKS refresher.
    public let services: [any Service]
    /// Health checks of the pipeline's parts (name, check, critical).
    public let healthChecks: [(name: String, check: any HealthCheck, critical: Bool)]
    /// The demo tools, when served.
    public let demo: DemoTools?
    /// Call totals per tool and outcome on this replica.
    public let statistics: ToolStatistics
    /// The circuit breakers as a health check (also lists the breakers that are not closed).
    public let breakers: CircuitBreakerHealthCheck?

    /// - Parameters:
    ///   - tools: tools served besides (or instead of) the demo tools.
    ///   - metricsFactory: where the pipeline's metrics go; `nil`: the bootstrapped `MetricsSystem`.
    public init(
        _ configuration: ToolOpsConfiguration, replicaID: String, tools: [ToolDefinition] = [], metricsFactory: (any MetricsFactory)? = nil,
        logger: Logger = Logger(label: "toolops")
    ) throws {
        let demo = configuration.demoTools ? DemoTools(replicaID: replicaID) : nil
        let registry = try ToolRegistry((try demo?.definitions() ?? []) + tools)
        let policies = configuration.policies

        var services: [any Service] = []
        var checks: [(name: String, check: any HealthCheck, critical: Bool)] = []
        var sweepable: [any SweepableStore] = []
        let backend: RedisBackend?
        let membership: any MembershipStore
        switch configuration.backend {
        case .redis(let settings):
            var redis = try RedisConfiguration(url: settings.url)
            if let password = settings.password { redis.password = password }
            if let password = settings.sentinelPassword { redis.sentinelPassword = password }
            if let caFile = settings.caFile { redis.tls.caFile = caFile }
            if let certificate = settings.certificateFile { redis.tls.certificateFile = certificate }
            if let key = settings.privateKeyFile { redis.tls.privateKeyFile = key }
            if let serverName = settings.serverName { redis.tls.serverName = serverName }
            if let timeout = settings.connectTimeout { redis.connectTimeout = timeout }
            if let timeout = settings.commandTimeout { redis.commandTimeout = timeout }
            if let size = settings.poolSize { redis.poolSize = size }
            if let busyPoll = settings.busyPoll { redis.busyPoll = busyPoll }
            let client = try RedisClient(configuration: redis, logger: logger, metricsFactory: metricsFactory)
            let made = RedisBackend(client: client, configuration: .init(
                    keys: RedisKeySchema(prefix: settings.keyPrefix),
                    rateLimitLeasing: .init(window: configuration.policies.rateLimitLeaseWindow)), logger: logger)
            services.append(made)
            membership = made.makeMembershipStore()
            backend = made
        default:
            backend = nil
            membership = MemoryMembershipStore()
        }
        /// One policy's store on the configured backend; memory and file stores join the sweeper.
        func store<Store>(
            memory: () -> (Store, any SweepableStore), file: (String) throws -> (Store, any SweepableStore), redis: (RedisBackend) throws -> Store
        ) throws -> Store {
            switch configuration.backend {
            case .memory:
                let (store, sweeper) = memory()
                sweepable.append(sweeper)
                return store
            case .file(let directory):
                let (store, sweeper) = try file(directory)
                sweepable.append(sweeper)
                return store
            case .redis:
                return try redis(try backend.requiredBackend())
            }
        }
        func degraded(_ policy: String) -> DegradedMode {
            if case .redis(let settings) = configuration.backend, let mode = settings.degraded[policy] { return mode }
            return policy == "cache" ? .failOpen : .local()
        }

        let statistics = ToolStatistics()
        let observability = Observability(
            .init(tools: .registered(registry.definitions.keys), logger: logger, statistics: statistics), metricsFactory: metricsFactory)
        if let backend {
            services.append(StatisticsPublisher(statistics: statistics, client: backend.client, keys: backend.keys, replicaID: replicaID, logger: logger))
        }
        let breakerCheck = CircuitBreakerHealthCheck()
        let resilienceObserver: ResilienceObserver = { [observability, breakerCheck] event in
            // The methods, not the `resilience`/`observer` closures: those are made per access.
            observability.observe(event)
            breakerCheck.observe(event)
        }

        var middlewares: [any ToolMiddleware] = [observability.middleware]

        // Auth.
        var credentialHeaders: [String] = []
        if configuration.auth.enabled {
            let auth = configuration.auth
            var authenticators: [any Authenticator] = []
            // API keys: those of the configuration file, and with Redis those created at run time
            // (`toolops keys create`), revoked on every replica at once.
            if !auth.apiKeys.isEmpty || backend != nil {
                let hasher = try auth.apiKeyPepper.map { pepper throws -> APIKeyHasher in try APIKeyHasher.hmacSHA256(pepper: pepper) } ?? .sha256
                let fixed = MemoryAPIKeyStore(auth.apiKeys)
                let store: any APIKeyStore = backend.map { LayeredAPIKeyStore(fixed: fixed, shared: $0.makeAPIKeyStore()) } ?? fixed
                authenticators.append(APIKeyAuthenticator(store: store, hasher: hasher, configuration: .init(header: auth.apiKeyHeader)))
                credentialHeaders.append(auth.apiKeyHeader)
            }
            if let url = auth.jwksURL {
                let source = JWKSKeySource(.init(url: url, timeout: auth.jwksTimeout), shared: backend?.makeJWKSDocumentStore())
                services.append(source)
                authenticators.append(
                    try JWTAuthenticator(
                        jwks: source,
                        configuration: .init(
                            algorithms: Set(auth.jwtAlgorithms), issuers: Set(auth.jwtIssuers), audiences: Set(auth.jwtAudiences),
                            tenantClaim: auth.jwtTenantClaim, rolesClaim: auth.jwtRolesClaim)))
            }
            if let url = auth.introspectionURL {
                let cache: any IntrospectionCache = backend?.makeIntrospectionCache() ?? MemoryIntrospectionCache()
                authenticators.append(
                    try IntrospectionAuthenticator(
                        .init(
                            url: url, clientID: auth.introspectionClientID, clientSecret: auth.introspectionClientSecret,
                            clientAuthentication: auth.introspectionMethod == "post" ? .clientSecretPost : .clientSecretBasic), cache: cache))
            }
            if auth.jwksURL != nil || auth.introspectionURL != nil { credentialHeaders.append("Authorization") }
            var authorizer: (any Authorizer)?
            if !auth.roles.isEmpty {
                var roles: [String: RBACPolicy.Role] = [:]
                for (name, role) in auth.roles {
                    roles[name] = RBACPolicy.Role(
                        inherits: role.inherits, allow: try role.allow.map { .init(tools: try ToolGlob($0)) },
                        deny: try role.deny.map { .init(tools: try ToolGlob($0)) })
                }
                authorizer = RBACAuthorizer(try RBACPolicy(roles: roles, defaultRole: auth.defaultRole))
            }
            var sinks: [any AuditSink] = [LogAuditSink(logger: logger)]
            if let backend { sinks.append(RedisAuditSink(client: backend.client, keys: backend.keys)) }
            middlewares.append(
                AuthMiddleware(
                    .init(
                        authenticator: CompositeAuthenticator(authenticators), authorizer: authorizer, allowAnonymous: auth.allowAnonymous,
                        audit: MultiAuditSink(sinks))))
        }

        // Rate limits.
        if !policies.rateLimitRules.isEmpty {
            var rules: [RateLimitRule] = []
            for settings in policies.rateLimitRules {
                let key: PolicyKey =
                    switch settings.key {
                    case "namespace": .namespace
                    case "identity": .identity
                    case "tenant": .tenant
                    case "tenantAndTool": .tenantAndTool
                    case "global": .global
                    default: .tool
                    }
                rules.append(
                    RateLimitRule(try ToolPattern(settings.tools), limit: try RateLimit(rate: settings.rate, per: settings.per, burst: settings.burst), key: key))
            }
            let store: any RateLimitStore = try store(
                memory: { let store = MemoryRateLimitStore(); return (store, store) },
                file: { let store = try FileRateLimitStore(directory: $0 + "/ratelimit"); return (store, store) },
                redis: { try $0.makeFallbackRateLimitStore(mode: degraded("rateLimit"), observer: resilienceObserver) })
            middlewares.append(
                try RateLimitMiddleware(.init(rules: rules, maxWait: policies.rateLimitMaxWait, observer: resilienceObserver), store: store))
        }

        // Cache.
        if policies.cacheEnabled {
            let patterns = try policies.cacheTools.map { text throws(ToolOpsError) in try ToolPattern(text) }
            let policy = try CachePolicy(
                defaultTTL: policies.cacheTTL, maxTTL: max(policies.cacheTTL, .seconds(3600)),
                skip: [{ call in !patterns.contains { $0.matches(call.tool) } }])
            let store: any CacheStore
            switch configuration.backend {
            case .memory: store = MemoryCacheStore(.init(maximumEntries: policies.cacheMaximumEntries))
            case .file(let directory): store = try FileCacheStore(path: directory + "/cache")
            case .redis:
                store = try backend.requiredBackend().makeFallbackCacheStore(
                    mode: degraded("cache"), fallback: MemoryCacheStore(.init(maximumEntries: policies.cacheMaximumEntries)))
            }
            middlewares.append(try CacheMiddleware(.init(policy: policy, observer: observability.cache), store: store))
        }

        // Retry.
        if policies.retryMaxAttempts > 1 {
            let policy = try RetryPolicy(maxAttempts: policies.retryMaxAttempts, initialDelay: policies.retryInitialDelay, maxDelay: policies.retryMaxDelay)
            middlewares.append(RetryMiddleware(.init(policy: policy, observer: resilienceObserver)))
        }

        // Circuit breaker.
        if policies.breakerEnabled {
            let policy = try CircuitBreakerPolicy(
                window: policies.breakerWindow, failureRateThreshold: policies.breakerFailureRate,
                minimumCalls: min(policies.breakerMinimumCalls, policies.breakerWindow.count ?? Int.max), openDuration: policies.breakerOpenDuration)
            let store: any CircuitBreakerStore = try store(
                memory: { let store = MemoryCircuitBreakerStore(); return (store, store) },
                file: { let store = try FileCircuitBreakerStore(directory: $0 + "/breakers"); return (store, store) },
                redis: { try $0.makeFallbackCircuitBreakerStore(mode: degraded("circuitBreaker"), observer: resilienceObserver) })
            let breaker = CircuitBreakerMiddleware(
                .init(policy: policy, isFailure: Self.countsAgainstTheBreaker, observer: resilienceObserver), store: store)
            breakerCheck.watch(breaker)
            middlewares.append(breaker)
            checks.append(("circuit-breakers", breakerCheck, false))
        }

        // Bulkhead.
        if policies.bulkheadMaxConcurrent > 0 {
            let store: any BulkheadStore = try store(
                memory: { let store = MemoryBulkheadStore(); return (store, store) },
                file: { let store = try FileBulkheadStore(directory: $0 + "/bulkheads"); return (store, store) },
                redis: { try $0.makeFallbackBulkheadStore(mode: degraded("bulkhead"), observer: resilienceObserver) })
            middlewares.append(
                try BulkheadMiddleware(
                    .init(maxConcurrent: policies.bulkheadMaxConcurrent, maxWait: policies.bulkheadMaxWait, observer: resilienceObserver), store: store))
        }

        // Timeout.
        if policies.timeout > .zero {
            middlewares.append(try TimeoutMiddleware(.init(timeout: policies.timeout, observer: resilienceObserver)))
        }

        if let backend {
            checks.append(("redis", backend.makeHealthCheck(), false))
        }
        if !sweepable.isEmpty { services.append(StoreSweeper(stores: sweepable)) }

        self.configuration = configuration
        self.registry = registry
        self.pipeline = ToolPipeline(runner: registry, middlewares: middlewares)
        self.routes = ToolRoutes(
            registry: registry, pipeline: pipeline,
            configuration: .init(
                maximumBodyBytes: configuration.server.maximumBodyBytes, tenantHeader: configuration.server.tenantHeader,
                credentialHeaders: credentialHeaders),
            logger: logger)
        self.backend = backend
        self.membership = membership
        self.services = services
        self.healthChecks = checks
        self.demo = demo
        self.statistics = statistics
        self.breakers = policies.breakerEnabled ? breakerCheck : nil
    }

    /// What a breaker counts as a failure: the tool's own failures and timeouts, not the
    /// caller's mistakes or another policy's refusals.
    @Sendable static func countsAgainstTheBreaker(_ error: any Error) -> Bool {
        guard let error = error as? ToolOpsError else { return !(error is CancellationError) }
        return error.code == .timedOut || error.code == .toolFailed
    }
}

extension Optional where Wrapped == RedisBackend {
    /// The backend, which a `.redis` configuration always has.
    fileprivate func requiredBackend() throws(ToolOpsError) -> RedisBackend {
        guard let self else { throw ToolOpsError(.invalidConfiguration, "a Redis store without a Redis backend") }
        return self
    }
}
