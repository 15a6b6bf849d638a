import ToolOpsCore

/// What is cached and for how long.
///
/// Defaults: 5 min TTL, at most 1 h, 10 % TTL jitter, tools tagged `write`, `danger`,
/// `unsafe`, `mutation` or `delete` never cached, entries up to 4 MiB, errors not cached,
/// no stale-if-error, no refresh-ahead.
public struct CachePolicy: Sendable {
    /// A rule that keeps a call out of the cache when it returns `true`.
    public typealias SkipRule = @Sendable (ToolCall) -> Bool

    /// The tags that mark a tool as having side effects (compared case-insensitively).
    public static let unsafeTags: Set<String> = ["write", "danger", "unsafe", "mutation", "delete"]

    /// TTL of tools without an override. Defaults to 5 minutes.
    public var defaultTTL: Duration
    /// Upper bound for every TTL, overrides included. Defaults to 1 hour.
    public var maxTTL: Duration
    /// TTL per tool pattern; the most specific pattern wins. Defaults to none.
    public var ttls: [(pattern: ToolPattern, ttl: Duration)]
    /// Each TTL is shortened by a random fraction up to this (0…0.5), so entries written
    /// together do not expire together. Defaults to 0.1.
    public var jitter: Double
    /// Cache tools that carry one of ``unsafeTags``. Custom ``skip`` rules still apply.
    /// Defaults to `false`.
    public var allowUnsafe: Bool
    /// Custom rules; any rule returning `true` keeps the call out of the cache, whatever
    /// ``allowUnsafe`` says. Defaults to none.
    public var skip: [SkipRule]
    /// Results whose encoding is larger than this are not cached (the call still succeeds).
    /// Defaults to 4 MiB.
    public var maximumEntryBytes: Int
    /// Cache failures for this long (negative caching), at most 1 minute. Defaults to `nil`:
    /// errors are not cached.
    public var negativeTTL: Duration?
    /// Keep expired entries this much longer and return them, marked stale, when the tool
    /// fails or times out (fail-safe). Defaults to `nil` (off).
    public var staleIfError: Duration?
    /// Refresh an entry in the background when a hit finds it older than this fraction of
    /// its TTL (0.5…0.99), once per key cluster-wide. Defaults to `nil` (off).
    public var refreshAhead: Double?

    public init(
        defaultTTL: Duration = .seconds(300), maxTTL: Duration = .seconds(3600),
        ttls: [(pattern: ToolPattern, ttl: Duration)] = [], jitter: Double = 0.1,
        allowUnsafe: Bool = false, skip: [SkipRule] = [], maximumEntryBytes: Int = 4 << 20,
        negativeTTL: Duration? = nil, staleIfError: Duration? = nil, refreshAhead: Double? = nil
    ) throws(ToolOpsError) {
        func require(_ condition: Bool, _ message: String) throws(ToolOpsError) {
            if !condition { throw ToolOpsError(.invalidConfiguration, message) }
        }
        try require(defaultTTL > .zero, "defaultTTL must be positive")
        try require(maxTTL >= defaultTTL, "maxTTL must be at least defaultTTL")
        for rule in ttls { try require(rule.ttl > .zero, "TTL for \(rule.pattern) must be positive") }
        try require(jitter >= 0 && jitter <= 0.5, "jitter must be in 0…0.5, got \(jitter)")
        try require(maximumEntryBytes > 0, "maximumEntryBytes must be positive")
        if let negativeTTL { try require(negativeTTL > .zero && negativeTTL <= .seconds(60), "negativeTTL must be in (0, 60 s]") }
        if let staleIfError { try require(staleIfError > .zero, "staleIfError must be positive") }
        if let refreshAhead { try require(refreshAhead >= 0.5 && refreshAhead < 1, "refreshAhead must be in 0.5…0.99, got \(refreshAhead)") }
        self.defaultTTL = defaultTTL
        self.maxTTL = maxTTL
        self.ttls = ttls
        self.jitter = jitter
        self.allowUnsafe = allowUnsafe
        self.skip = skip
        self.maximumEntryBytes = maximumEntryBytes
        self.negativeTTL = negativeTTL
        self.staleIfError = staleIfError
        self.refreshAhead = refreshAhead
    }

    /// Whether `call` may be served from and stored in the cache.
    public func shouldCache(_ call: ToolCall) -> Bool {
        if skip.contains(where: { $0(call) }) { return false }
        if !allowUnsafe && call.tags.contains(where: { Self.unsafeTags.contains($0.lowercased()) }) { return false }
        return true
    }

    /// The TTL for `tool` before jitter: its most specific override or the default, capped at ``maxTTL``.
    public func ttl(for tool: ToolID) -> Duration {
        let chosen = ttls.filter { $0.pattern.matches(tool) }.max { $0.pattern.specificity < $1.pattern.specificity }?.ttl ?? defaultTTL
        return min(chosen, maxTTL)
    }

    /// ``ttl(for:)`` shortened by a random fraction of at most ``jitter``.
    func jitteredTTL(for tool: ToolID) -> Duration {
        let ttl = ttl(for: tool)
        guard jitter > 0 else { return ttl }
        return ttl * (1 - Double.random(in: 0...jitter))
    }
}
