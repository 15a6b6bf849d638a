import Foundation
import Logging
import ToolOpsAuth
import ToolOpsCore
import ToolOpsRedis
import ToolOpsResilience

/// Everything a ToolOps server runs with, loaded from one file, the environment and flags (see
/// ``ConfigurationSource``), validated before anything starts. Every key, its default and its
/// environment variable are listed in `Docs/server.md`.
///
/// ```swift
/// let configuration = try ToolOpsConfiguration.load(ConfigurationSource(file: "toolops.json"))
/// let server = try ToolOpsServer(configuration)
/// ```
public struct ToolOpsConfiguration: Sendable {
    public struct Server: Sendable {
        /// `server.host`: defaults to `127.0.0.1` (`0.0.0.0` in a container).
        public var host = "127.0.0.1"
        /// `server.port`: defaults to 8080.
        public var port = 8080
        /// `server.maxBodyBytes`: larger request bodies get 413. Defaults to 1 MiB.
        public var maximumBodyBytes = 1 << 20
        /// `server.tenantHeader`: defaults to `X-Tenant-ID` (empty: none).
        public var tenantHeader: String? = "X-Tenant-ID"
        /// `server.drainDelay`: serving on after readiness turns false on SIGTERM. Defaults to 0.
        public var drainDelay: Duration = .zero
        /// `server.eventLoopThreads`: the HTTP server's NIO event-loop threads. `nil` (the
        /// default) uses NIO's shared group, one thread per core. Tool calls run on the Swift
        /// concurrency pool, not on these threads: on small machines fewer event loops sleep
        /// less often between responses, and each wake-up is a context switch.
        public var eventLoopThreads: Int?
        public init() {}
    }

    public struct Replica: Sendable {
        /// `replica.id`: defaults to `$POD_NAME`, else `$HOSTNAME`, else host name and pid.
        public var id: String?
        /// `replica.heartbeatInterval`: defaults to 5 s.
        public var heartbeatInterval: Duration = .seconds(5)
        /// `replica.registrationTTL`: defaults to 15 s.
        public var registrationTTL: Duration = .seconds(15)
        public init() {}
    }

    /// `state.backend`: where shared state lives.
    public enum Backend: Sendable {
        /// In this process (the default): nothing shared.
        case memory
        /// Files in a directory: shared by processes on one machine.
        case file(directory: String)
        /// Redis: shared by every replica.
        case redis(Redis)
    }

    public struct Redis: Sendable, CustomStringConvertible {
        /// `state.redis.url`: `redis://` or `rediss://` (TLS); `redis-cluster://h1:p1,h2:p2` (Redis
        /// Cluster, any nodes as seeds); `redis-sentinel://s1:26379,s2:26379/<master name>` (Sentinel).
        public var url: String
        /// `state.redis.password` or `state.redis.passwordFile` (overrides one in the URL). Never printed.
        public var password: String?
        /// `state.redis.sentinelPassword` or `.sentinelPasswordFile`: the sentinels' own password. Never printed.
        public var sentinelPassword: String?
        /// `state.redis.keyPrefix`: one per deployment sharing a Redis. Defaults to `toolops`.
        public var keyPrefix = "toolops"
        /// `state.redis.tls.caFile`, `.certFile`, `.keyFile`, `.serverName`.
        public var caFile: String?
        public var certificateFile: String?
        public var privateKeyFile: String?
        public var serverName: String?
        /// `state.redis.degraded.{rateLimit,circuitBreaker,bulkhead,cache}`: what each policy does
        /// while Redis is unreachable — `local` (this replica's own memory), `failOpen`,
        /// `failClosed`. Defaults: `local` for the first three, `failOpen` for the cache.
        public var degraded: [String: DegradedMode] = [:]
        /// `state.redis.connectTimeout` (5 s), `.commandTimeout` (5 s), `.poolSize` (2),
        /// `.busyPoll` (0: off; see `RedisConfiguration.busyPoll` — latency for CPU).
        public var connectTimeout: Duration?
        public var commandTimeout: Duration?
        public var poolSize: Int?
        public var busyPoll: Duration?

        public init(url: String) { self.url = url }

        public var description: String {
            "Redis(url: \(RedisConfiguration.redact(url)), password: \(password == nil ? "none" : "<set>"), keyPrefix: \(keyPrefix))"
        }
    }

    public struct RateLimitRuleSettings: Sendable {
        /// `tools`: a ToolPattern (`*`, `ns:*`, `ns:name`).
        public var tools = "*"
        public var rate: Int
        public var per: Duration = .seconds(1)
        public var burst: Int?
        /// `key`: `tool`, `namespace`, `identity`, `tenant`, `tenantAndTool` or `global`. Defaults to `tool`.
        public var key = "tool"

        public init(tools: String = "*", rate: Int, per: Duration = .seconds(1), burst: Int? = nil, key: String = "tool") {
            self.tools = tools
            self.rate = rate
            self.per = per
            self.burst = burst
            self.key = key
        }
    }

    public struct Policies: Sendable {
        /// `policies.rateLimit.rules` (list) and `.maxWait`.
        public var rateLimitRules: [RateLimitRuleSettings] = []
        public var rateLimitMaxWait: Duration = .zero
        /// `policies.rateLimit.leaseWindow` (Redis only; default 20 ms, 0: off): busy buckets
        /// hand this replica a batch of tokens to spend within the window (see `RedisRateLimitStore.Leasing`).
        public var rateLimitLeaseWindow: Duration = .milliseconds(20)
        /// `policies.cache.enabled`, `.ttl` (default 5 min), `.maxEntries` (memory, default 10,000), `.tools` (patterns cached; default every tool not tagged `write`).
        public var cacheEnabled = false
        public var cacheTTL: Duration = .seconds(300)
        public var cacheMaximumEntries = 10_000
        public var cacheTools: [String] = ["*"]
        /// `policies.retry.maxAttempts` (1: off; default 1), `.initialDelay` (100 ms), `.maxDelay` (2 s).
        public var retryMaxAttempts = 1
        public var retryInitialDelay: Duration = .milliseconds(100)
        public var retryMaxDelay: Duration = .seconds(2)
        /// `policies.circuitBreaker.enabled`, `.failureRate` (0.5), `.minimumCalls` (10), `.window` (a
        /// duration such as `"10s"` — the default, and what the Redis store needs — or a number of
        /// calls), `.openDuration` (30 s).
        public var breakerEnabled = false
        public var breakerFailureRate = 0.5
        public var breakerMinimumCalls = 10
        public var breakerWindow: CircuitBreakerPolicy.Window = .time(.seconds(10))
        public var breakerOpenDuration: Duration = .seconds(30)
        /// `policies.bulkhead.maxConcurrent` (0: off), `.maxWait` (0).
        public var bulkheadMaxConcurrent = 0
        public var bulkheadMaxWait: Duration = .zero
        /// `policies.timeout` (0: off). Defaults to 30 s.
        public var timeout: Duration = .seconds(30)
        public init() {}
    }

    public struct Auth: Sendable {
        /// `auth.enabled`: defaults to false (every call anonymous).
        public var enabled = false
        /// `auth.allowAnonymous`: calls without credentials run as `anonymous`. Defaults to false.
        public var allowAnonymous = false
        /// `auth.apiKeys.header` (`X-API-Key`), `.pepperFile`, `.keys` (list of `{id, sha256, principal, tenant, roles, scopes}`).
        public var apiKeyHeader = "X-API-Key"
        public var apiKeyPepper: [UInt8]?
        public var apiKeys: [APIKeyRecord] = []
        /// `auth.jwt.jwksURL`, `.issuers`, `.audiences`, `.algorithms` (RS256, ES256, EdDSA), `.tenantClaim`, `.rolesClaim`.
        public var jwksURL: String?
        public var jwtIssuers: [String] = []
        public var jwtAudiences: [String] = []
        public var jwtAlgorithms: [String] = ["RS256", "ES256", "EdDSA"]
        public var jwtTenantClaim: String?
        public var jwtRolesClaim: String? = "roles"
        /// `auth.jwt.fetchTimeout`: bound on one JWKS fetch. Defaults to 5 s.
        public var jwksTimeout: Duration = .seconds(5)
        /// `auth.introspection.url`, `.clientID`, `.clientSecret`/`.clientSecretFile`, `.method` (`basic`|`post`).
        public var introspectionURL: String?
        public var introspectionClientID = ""
        public var introspectionClientSecret = ""
        public var introspectionMethod = "basic"
        /// `auth.rbac.roles` (object: role → `{inherits, allow, deny}` with tool globs), `.defaultRole`. No roles: no authorization.
        public var roles: [String: (inherits: [String], allow: [String], deny: [String])] = [:]
        public var defaultRole: String?
        public init() {}
    }

    public var server = Server()
    public var replica = Replica()
    public var backend: Backend = .memory
    /// `log.level` (info) and `log.format` (`json` or `text`).
    public var logLevel: Logger.Level = .info
    public var logFormat = "json"
    /// `tools.demo`: serve the built-in `demo:*` tools. Defaults to true.
    public var demoTools = true
    public var policies = Policies()
    public var auth = Auth()

    public init() {}
}
