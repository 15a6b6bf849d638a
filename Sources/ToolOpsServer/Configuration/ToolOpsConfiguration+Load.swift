import Foundation
import Logging
import ToolOpsAuth
import ToolOpsCore
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsResilience

extension ToolOpsConfiguration {
    /// Reads and checks every key; unknown keys are errors.
    public static func load(_ source: ConfigurationSource) throws(ToolOpsError) -> ToolOpsConfiguration {
        let root = ConfigurationNode(source)
        var configuration = ToolOpsConfiguration()
        try configuration.read(root)
        try root.rejectUnknownKeys()
        return configuration
    }

    mutating func read(_ root: ConfigurationNode) throws(ToolOpsError) {
        if let node = try root.object("server") {
            server.host = try node.string("host", default: server.host)
            server.port = try node.int("port", in: 0...65535, default: server.port)
            server.maximumBodyBytes = try node.int("maxBodyBytes", in: 1...(256 << 20), default: server.maximumBodyBytes)
            if let header = try node.string("tenantHeader") { server.tenantHeader = header.isEmpty ? nil : header }
            server.drainDelay = try node.duration("drainDelay", default: server.drainDelay)
            server.eventLoopThreads = try node.int("eventLoopThreads", in: 1...256)
        }
        if let node = try root.object("replica") {
            if let id = try node.string("id") {
                do throws(ToolOpsError) { try ReplicaInfo.validateID(id) } catch { throw node.fail("id", "replica.id", error.message) }
                replica.id = id
            }
            replica.heartbeatInterval = try node.duration("heartbeatInterval", atLeast: .milliseconds(10), default: replica.heartbeatInterval)
            replica.registrationTTL = try node.duration("registrationTTL", atLeast: .milliseconds(10), default: replica.registrationTTL)
            if replica.registrationTTL <= replica.heartbeatInterval {
                throw ToolOpsError(.invalidConfiguration, "replica.registrationTTL must be longer than replica.heartbeatInterval")
            }
        }
        if let node = try root.object("state") { try readState(node) }
        if let node = try root.object("log") {
            let level = try node.choice("level", Logger.Level.allCases.map(\.rawValue), default: logLevel.rawValue)
            logLevel = Logger.Level(rawValue: level) ?? .info
            logFormat = try node.choice("format", ["json", "text"], default: logFormat)
        }
        if let node = try root.object("tools") { demoTools = try node.bool("demo", default: demoTools) }
        if let node = try root.object("policies") { try readPolicies(node) }
        if let node = try root.object("auth") { try readAuth(node) }
    }

    mutating func readState(_ node: ConfigurationNode) throws(ToolOpsError) {
        switch try node.choice("backend", ["memory", "file", "redis"], default: "memory") {
        case "file":
            guard let directory = try node.string("directory"), !directory.isEmpty else {
                throw ToolOpsError(.invalidConfiguration, "state.directory is required with state.backend file")
            }
            backend = .file(directory: directory)
        case "redis":
            guard let redisNode = try node.object("redis"), let url = try redisNode.string("url") else {
                throw ToolOpsError(.invalidConfiguration, "state.redis.url is required with state.backend redis")
            }
            do { _ = try RedisConfiguration(url: url) } catch { throw redisNode.fail("url", "state.redis.url", error.message) }
            var redis = Redis(url: url)
            redis.password = try Self.secret(redisNode, "password", "passwordFile")
            redis.sentinelPassword = try Self.secret(redisNode, "sentinelPassword", "sentinelPasswordFile")
            redis.keyPrefix = try redisNode.string("keyPrefix", default: redis.keyPrefix)
            guard !redis.keyPrefix.isEmpty, !redis.keyPrefix.contains(where: { $0 == "{" || $0 == "}" || $0.isWhitespace }) else {
                throw ToolOpsError(.invalidConfiguration, "state.redis.keyPrefix must be non-empty, without braces or spaces")
            }
            if let tls = try redisNode.object("tls") {
                redis.caFile = try tls.string("caFile")
                redis.certificateFile = try tls.string("certFile")
                redis.privateKeyFile = try tls.string("keyFile")
                redis.serverName = try tls.string("serverName")
                if (redis.certificateFile == nil) != (redis.privateKeyFile == nil) {
                    throw ToolOpsError(.invalidConfiguration, "state.redis.tls.certFile and state.redis.tls.keyFile go together")
                }
            }
            redis.connectTimeout = try redisNode.duration("connectTimeout", atLeast: .milliseconds(10))
            redis.commandTimeout = try redisNode.duration("commandTimeout", atLeast: .milliseconds(10))
            redis.poolSize = try redisNode.int("poolSize", in: 1...64)
            redis.busyPoll = try redisNode.duration("busyPoll")
            if let busyPoll = redis.busyPoll, busyPoll > .milliseconds(10) {
                throw ToolOpsError(.invalidConfiguration, "state.redis.busyPoll above 10ms keeps a core busy for nothing; use 0 to 1ms")
            }
            if let degraded = try redisNode.object("degraded") {
                for (policy, fallback) in [("rateLimit", "local"), ("circuitBreaker", "local"), ("bulkhead", "local"), ("cache", "failOpen")] {
                    let mode = try degraded.choice(policy, ["local", "failOpen", "failClosed"], default: fallback)
                    redis.degraded[policy] = mode == "local" ? .local() : mode == "failOpen" ? .failOpen : .failClosed
                }
            }
            backend = .redis(redis)
        default:
            backend = .memory
        }
    }

    mutating func readPolicies(_ node: ConfigurationNode) throws(ToolOpsError) {
        if let limit = try node.object("rateLimit") {
            for rule in try limit.objects("rules") {
                guard let rate = try rule.int("rate", in: 1...1_000_000_000) else {
                    throw ToolOpsError(.invalidConfiguration, "\(rule.dotted("rate")) is required")
                }
                var settings = RateLimitRuleSettings(rate: rate)
                settings.tools = try rule.string("tools", default: "*")
                do { _ = try ToolPattern(settings.tools) } catch { throw rule.fail("tools", rule.dotted("tools"), error.message) }
                settings.per = try rule.duration("per", atLeast: .milliseconds(1), default: .seconds(1))
                settings.burst = try rule.int("burst", in: 1...1_000_000_000)
                settings.key = try rule.choice("key", ["tool", "namespace", "identity", "tenant", "tenantAndTool", "global"], default: "tool")
                policies.rateLimitRules.append(settings)
            }
            policies.rateLimitMaxWait = try limit.duration("maxWait", default: .zero)
            policies.rateLimitLeaseWindow = try limit.duration("leaseWindow", default: policies.rateLimitLeaseWindow)
            if policies.rateLimitLeaseWindow > .seconds(1) {
                throw ToolOpsError(.invalidConfiguration, "\(limit.dotted("leaseWindow")) above 1s lets a replica hold tokens others need; use 0 to 100ms")
            }
        }
        if let cache = try node.object("cache") {
            policies.cacheEnabled = try cache.bool("enabled", default: true)
            policies.cacheTTL = try cache.duration("ttl", atLeast: .milliseconds(1), default: policies.cacheTTL)
            policies.cacheMaximumEntries = try cache.int("maxEntries", in: 1...100_000_000, default: policies.cacheMaximumEntries)
            if let tools = try cache.strings("tools") {
                for pattern in tools {
                    do { _ = try ToolPattern(pattern) } catch { throw cache.fail("tools", cache.dotted("tools"), error.message) }
                }
                policies.cacheTools = tools
            }
        }
        if let retry = try node.object("retry") {
            policies.retryMaxAttempts = try retry.int("maxAttempts", in: 1...100, default: 3)
            policies.retryInitialDelay = try retry.duration("initialDelay", default: policies.retryInitialDelay)
            policies.retryMaxDelay = try retry.duration("maxDelay", default: policies.retryMaxDelay)
        }
        if let breaker = try node.object("circuitBreaker") {
            policies.breakerEnabled = try breaker.bool("enabled", default: true)
            policies.breakerFailureRate = try breaker.double("failureRate", in: 0.01...1, default: policies.breakerFailureRate)
            policies.breakerMinimumCalls = try breaker.int("minimumCalls", in: 1...1_000_000, default: policies.breakerMinimumCalls)
            if let (value, origin) = breaker.raw("window") {
                switch value {
                case .integer(let calls) where (1...100_000).contains(calls): policies.breakerWindow = .count(Int(calls))
                case .string(let text):
                    guard let duration = ConfigurationNode.parseDuration(text), duration >= .milliseconds(100) else {
                        throw breaker.fail("window", origin, "expected a duration of at least 100ms (or a number of calls)")
                    }
                    policies.breakerWindow = .time(duration)
                default: throw breaker.fail("window", origin, "expected a duration (10s) or a number of calls (1…100000)")
                }
            }
            if case .redis = backend, policies.breakerWindow.count != nil {
                throw ToolOpsError(.invalidConfiguration, "policies.circuitBreaker.window must be a duration with the Redis backend (its counts are time-bucketed)")
            }
            policies.breakerOpenDuration = try breaker.duration("openDuration", atLeast: .milliseconds(1), default: policies.breakerOpenDuration)
        }
        if let bulkhead = try node.object("bulkhead") {
            policies.bulkheadMaxConcurrent = try bulkhead.int("maxConcurrent", in: 0...1_000_000, default: 0)
            policies.bulkheadMaxWait = try bulkhead.duration("maxWait", default: .zero)
        }
        policies.timeout = try node.duration("timeout", default: policies.timeout)
    }

    mutating func readAuth(_ node: ConfigurationNode) throws(ToolOpsError) {
        auth.enabled = try node.bool("enabled", default: true)
        auth.allowAnonymous = try node.bool("allowAnonymous", default: false)
        if let keys = try node.object("apiKeys") {
            auth.apiKeyHeader = try keys.string("header", default: auth.apiKeyHeader)
            if let pepper = try Self.secret(keys, "pepper", "pepperFile") { auth.apiKeyPepper = Array(pepper.utf8) }
            for entry in try keys.objects("keys") {
                guard let id = try entry.string("id"), let principal = try entry.string("principal"), let hex = try entry.string("sha256"),
                    let digest = APIKeyRecord.unhex(hex.lowercased()), digest.count == 32
                else {
                    throw ToolOpsError(.invalidConfiguration, "\(entry.dotted("")) needs id, principal and sha256 (64 hex digits of the key's digest)")
                }
                let key = APIKeyRecord(
                    id: id, digest: digest, principal: principal, tenant: try entry.string("tenant"), roles: try entry.strings("roles") ?? [],
                    scopes: try entry.strings("scopes") ?? [])
                auth.apiKeys.append(key)
            }
        }
        if let jwt = try node.object("jwt") {
            guard let url = try jwt.string("jwksURL"), URL(string: url)?.host != nil else {
                throw ToolOpsError(.invalidConfiguration, "auth.jwt.jwksURL must be an absolute URL")
            }
            auth.jwksURL = url
            auth.jwtIssuers = try jwt.strings("issuers") ?? []
            auth.jwtAudiences = try jwt.strings("audiences") ?? []
            auth.jwtAlgorithms = try jwt.strings("algorithms") ?? auth.jwtAlgorithms
            auth.jwtTenantClaim = try jwt.string("tenantClaim")
            auth.jwtRolesClaim = try jwt.string("rolesClaim") ?? auth.jwtRolesClaim
            auth.jwksTimeout = try jwt.duration("fetchTimeout", atLeast: .milliseconds(10), default: auth.jwksTimeout)
        }
        if let introspection = try node.object("introspection") {
            guard let url = try introspection.string("url"), URL(string: url)?.host != nil else {
                throw ToolOpsError(.invalidConfiguration, "auth.introspection.url must be an absolute URL")
            }
            auth.introspectionURL = url
            auth.introspectionClientID = try introspection.string("clientID", default: "")
            auth.introspectionClientSecret = try Self.secret(introspection, "clientSecret", "clientSecretFile") ?? ""
            auth.introspectionMethod = try introspection.choice("method", ["basic", "post"], default: "basic")
        }
        if let rbac = try node.object("rbac") {
            if let roles = try rbac.object("roles"), case .object(let members)? = roles.value {
                for name in members.keys.sorted() {
                    guard let role = try roles.object(name) else { continue }
                    auth.roles[name] = (try role.strings("inherits") ?? [], try role.strings("allow") ?? [], try role.strings("deny") ?? [])
                }
            }
            auth.defaultRole = try rbac.string("defaultRole")
        }
        if auth.enabled {
            // A JWT authenticator refuses an opaque token as malformed (and the composite stops
            // at a refusal), so one bearer-token provider at a time.
            if auth.jwksURL != nil, auth.introspectionURL != nil {
                throw ToolOpsError(.invalidConfiguration, "auth.jwt and auth.introspection both read bearer tokens: configure one of them")
            }
            var redisKeys = false
            if case .redis = backend { redisKeys = true }  // keys created at run time live in Redis
            if auth.apiKeys.isEmpty, !redisKeys, auth.jwksURL == nil, auth.introspectionURL == nil, !auth.allowAnonymous {
                throw ToolOpsError(
                    .invalidConfiguration, "auth is enabled without auth.apiKeys.keys, auth.jwt or auth.introspection: every call would be refused")
            }
        }
    }

    /// A secret given inline (`key`) or in a file (`fileKey`; trailing newline dropped); never echoed.
    static func secret(_ node: ConfigurationNode, _ key: String, _ fileKey: String) throws(ToolOpsError) -> String? {
        if let path = try node.string(fileKey) {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ToolOpsError(.invalidConfiguration, "\(node.dotted(fileKey)): the file \(path) cannot be read")
            }
            var text = String(decoding: data, as: UTF8.self)
            while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
            return text
        }
        return try node.string(key)
    }
}
