import Synchronization
import ToolOpsCore

/// One limit applied to the calls whose tool matches `pattern`, bucketed by `key`.
///
/// Among rules with the same ``scope`` only the most specific matching pattern applies
/// (`ns:name` over `ns:*` over `*`), so a per-tool limit overrides a namespace default.
/// Rules in different scopes all apply — e.g. a per-tool limit *and* a per-tenant limit.
public struct RateLimitRule: Sendable {
    public var pattern: ToolPattern
    public var limit: RateLimit
    public var key: PolicyKey
    /// Defaults to the key's kind (`tool`, `tenant`, …).
    public var scope: String

    public init(_ pattern: ToolPattern = .any, limit: RateLimit, key: PolicyKey = .tool, scope: String? = nil) {
        self.pattern = pattern
        self.limit = limit
        self.key = key
        self.scope = scope ?? key.description
    }
}

/// Rate limiting for tool calls.
///
/// ```swift
/// let limiter = try RateLimitMiddleware(.init(rules: [
///     RateLimitRule(try ToolPattern("github:*"), limit: try RateLimit(rate: 10), key: .tenant),
///     RateLimitRule(limit: try RateLimit(rate: 1000), key: .global),
/// ]))
/// ```
public struct RateLimitMiddleware: ToolMiddleware {
    public struct Configuration: Sendable {
        public var rules: [RateLimitRule]
        /// Tokens a call costs. Defaults to 1. A cost above a rule's burst can never pass
        /// and is refused as invalid input rather than waiting forever.
        public var cost: @Sendable (ToolCall) -> Int
        /// How long a call may wait for a reserved slot instead of being refused. Waiting
        /// callers are served in arrival order (the slot is reserved when they arrive).
        /// Defaults to zero (refuse at once).
        public var maxWait: Duration
        /// Defaults to ``PolicyMode/enforce``.
        public var mode: PolicyMode
        /// Prefix of every bucket key in the store. Defaults to `rl`.
        public var keyPrefix: String
        public var observer: ResilienceObserver?

        public init(
            rules: [RateLimitRule], cost: @escaping @Sendable (ToolCall) -> Int = { _ in 1 },
            maxWait: Duration = .zero, mode: PolicyMode = .enforce, keyPrefix: String = "rl",
            observer: ResilienceObserver? = nil
        ) {
            self.rules = rules
            self.cost = cost
            self.maxWait = maxWait
            self.mode = mode
            self.keyPrefix = keyPrefix
            self.observer = observer
        }
    }

    public let configuration: Configuration
    let store: any RateLimitStore
    /// The same store when it decides without waiting (memory): called directly.
    let synchronousStore: (any SynchronousRateLimitStore)?
    /// The same store when it can sometimes decide at once (Redis with leased tokens).
    let locallyDeciding: (any LocallyDecidingRateLimitStore)?
    let clock: any ToolOpsClock
    private let cache = SelectionCache()

    final class SelectionCache: Sendable {
        let selections = Mutex<[ToolID: Selected]>([:])
    }

    /// The rules of one tool, and — when every key depends on the tool alone — the requests of
    /// a call costing one token, built once.
    struct Selected: Sendable {
        var selections: [Selection]
        var unitRequests: [RateLimitRequest]?
    }

    public init(
        _ configuration: Configuration, store: any RateLimitStore = MemoryRateLimitStore(), clock: any ToolOpsClock = SystemClock()
    ) throws(ToolOpsError) {
        try requireConfiguration(!configuration.rules.isEmpty, "a rate limiter needs at least one rule")
        try requireConfiguration(configuration.maxWait >= .zero, "maxWait must not be negative")
        self.configuration = configuration
        self.store = store
        self.synchronousStore = store as? any SynchronousRateLimitStore
        self.locallyDeciding = store as? any LocallyDecidingRateLimitStore
        self.clock = clock
    }

    /// The rules that apply to a tool (one per scope, most specific first), with the fixed
    /// part of their bucket keys. Cached per tool: rule matching is pure.
    struct Selection: Sendable {
        var rule: RateLimitRule
        var keyPrefix: String
        /// `scope:pattern`: the rule's name in events and metrics.
        var name: String
    }

    private func selection(for call: ToolCall) -> Selected {
        let tool = call.tool
        if let cached = cache.selections.withLock({ $0[tool] }) { return cached }
        var chosen: [String: RateLimitRule] = [:]
        var order: [String] = []
        for rule in configuration.rules where rule.pattern.matches(tool) {
            if let existing = chosen[rule.scope] {
                if rule.pattern.specificity > existing.pattern.specificity { chosen[rule.scope] = rule }
            } else {
                chosen[rule.scope] = rule
                order.append(rule.scope)
            }
        }
        let selections = order.compactMap { scope in
            chosen[scope].map {
                Selection(rule: $0, keyPrefix: "\(configuration.keyPrefix):\(scope):\($0.pattern):", name: "\(scope):\($0.pattern)")
            }
        }
        var selected = Selected(selections: selections, unitRequests: nil)
        if selections.allSatisfy({ $0.rule.key.dependsOnlyOnTool && $0.rule.limit.burst >= 1 }) {
            selected.unitRequests = selections.map {
                RateLimitRequest(key: $0.keyPrefix + $0.rule.key.key(for: call), cost: 1, limit: $0.rule.limit)
            }
        }
        cache.selections.withLock { cache in
            if cache.count >= 10_000 { cache.removeAll() }  // bounded: tool ids may come from callers
            cache[tool] = selected
        }
        return selected
    }

    /// The bucket requests a call would make.
    public func requests(for call: ToolCall) throws(ToolOpsError) -> [RateLimitRequest] {
        try plan(for: call).requests
    }

    /// The bucket requests a call would make, and the rules they come from (in the same order).
    func plan(for call: ToolCall) throws(ToolOpsError) -> (requests: [RateLimitRequest], selected: Selected) {
        let cost = configuration.cost(call)
        if cost < 0 { throw ToolOpsError(.invalidInput, "rate-limit cost must not be negative, got \(cost)") }
        let selected = selection(for: call)
        if cost == 1, let unitRequests = selected.unitRequests { return (unitRequests, selected) }
        var requests: [RateLimitRequest] = []
        for selection in selected.selections {
            if cost > selection.rule.limit.burst {
                throw ToolOpsError(
                    .invalidInput, "call costs \(cost) tokens but the \(selection.rule.scope) limit's burst is \(selection.rule.limit.burst)")
            }
            requests.append(RateLimitRequest(key: selection.keyPrefix + selection.rule.key.key(for: call), cost: cost, limit: selection.rule.limit))
        }
        return (requests, selected)
    }

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        let (requests, selected) = try plan(for: call)
        if requests.isEmpty { return try await next.run(call) }
        let shadow = configuration.mode.isShadow
        let maxWait = shadow ? Duration.zero : configuration.maxWait
        let observer = configuration.observer
        // The common case (one rule) decided at once — an in-process store, or a shared store
        // from its leased tokens: no arrays, no async call.
        let immediate: RateLimitDecision?
        if requests.count == 1, let synchronousStore {
            immediate = synchronousStore.decide(requests[0], maxWait: maxWait)
        } else if requests.count == 1, maxWait == .zero, let locallyDeciding {
            immediate = locallyDeciding.decideLocally(requests[0])
        } else {
            immediate = nil
        }
        if let decision = immediate {
            observer?(.rateLimitDecided(tool: call.tool, rule: selected.selections[0].name, allowed: decision.allowed, shadow: shadow))
            if decision.allowed {
                if decision.wait > .zero {
                    configuration.observer?(.rateLimitWaited(tool: call.tool, key: requests[0].key, wait: decision.wait))
                    try await clock.sleep(for: decision.wait)
                }
                return try await next.run(call)
            }
            try refuse(call, requests[0], decision, shadow: shadow)
            return try await next.run(call)
        }
        let decisions: [RateLimitDecision]
        if let synchronousStore {
            decisions = synchronousStore.decide(requests, maxWait: maxWait)
        } else {
            decisions = try await store.acquire(requests, maxWait: maxWait)
        }
        if let observer {
            for (selection, decision) in zip(selected.selections, decisions) {
                observer(.rateLimitDecided(tool: call.tool, rule: selection.name, allowed: decision.allowed, shadow: shadow))
            }
        }
        // A refused batch refuses every bucket; report the one that binds (the longest wait).
        var refused: Int?
        for index in decisions.indices where !decisions[index].allowed {
            if refused.map({ decisions[$0].retryAfter < decisions[index].retryAfter }) ?? true { refused = index }
        }
        if let refused {
            try refuse(call, requests[refused], decisions[refused], shadow: shadow)
        } else if let wait = decisions.first?.wait, wait > .zero {
            configuration.observer?(.rateLimitWaited(tool: call.tool, key: requests[0].key, wait: wait))
            try await clock.sleep(for: wait)
        }
        return try await next.run(call)
    }

    /// Reports a refusal and, unless in shadow mode, throws it.
    func refuse(_ call: ToolCall, _ request: RateLimitRequest, _ decision: RateLimitDecision, shadow: Bool) throws {
        configuration.observer?(.rateLimited(tool: call.tool, key: request.key, decision: decision, shadow: shadow))
        if !shadow {
            throw ToolOpsError(
                .rateLimited, "rate limit \(request.limit) exceeded for \(request.key)", retryAfter: decision.retryAfter,
                underlying: RateLimitRefusal(limit: request.limit, decision: decision))
        }
    }
}

/// What a refused call is told about the limit that refused it: the
/// ``ToolOpsError/underlying`` of a ``ToolOpsError/Code/rateLimited`` error, from which the HTTP
/// layer writes `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
public struct RateLimitRefusal: Error, Sendable, Hashable {
    public var limit: RateLimit
    public var decision: RateLimitDecision
}
