import Metrics
import ToolOpsCore

/// What the cache did, for logs and tests.
public enum CacheEvent: Sendable {
    case hit(CacheKey)
    case miss(CacheKey)
    /// The tool failed and an expired entry (within ``CachePolicy/staleIfError``) was served.
    case servedStale(CacheKey, error: any Error)
    /// The call waited for a fill elsewhere (another task, or another replica) and got its result.
    case coalesced(CacheKey)
    /// The result was too large to cache.
    case tooLarge(CacheKey, bytes: Int)
    /// The store failed; the call went on uncached.
    case storeFailed(operation: String, error: any Error)
    /// A hit triggered a background refresh.
    case refreshStarted(CacheKey)
}

/// Serves repeated tool calls from a ``CacheStore``.
///
/// - hit: the stored result, without running the tool (`metadata["cache"] == "hit"`);
/// - miss: the tool runs once per key however many identical calls arrive together
///   (single-flight in the process and, with a store that is a ``CacheFillCoordinator``,
///   one filler across the cluster) and its result is stored;
/// - the tool fails while an expired entry is within ``CachePolicy/staleIfError``: that entry
///   is returned, `metadata["cache"] == "stale"`;
/// - the store fails: the call runs uncached (counted in `toolops_cache_store_errors_total`);
///   cache trouble never fails a call.
///
/// ```swift
/// let cache = try CacheMiddleware(.init(policy: try CachePolicy(defaultTTL: .seconds(60))), store: MemoryCacheStore())
/// let pipeline = ToolPipeline(runner: tool) { limiter; cache; breaker }
/// ```
public struct CacheMiddleware: ToolMiddleware {
    public struct Configuration: Sendable {
        public var policy: CachePolicy
        public var keyer: CacheKeyer
        /// How long a filler holds its cluster-wide lease (should exceed the slowest tool
        /// run). Defaults to 10 s.
        public var fillLease: Duration
        /// How long a call waits for another replica's fill before running the tool itself.
        /// Defaults to 10 s.
        public var fillWait: Duration
        public var observer: (@Sendable (CacheEvent) -> Void)?
        /// Where refreshes ahead of expiry (``CachePolicy/refreshAhead``) run; required when
        /// the policy refreshes ahead, and it must run as a service. While it is not running
        /// (or its queue is full) a refresh is skipped: the entry is filled again when it
        /// expires. Defaults to none.
        public var background: BackgroundWork?

        public init(
            policy: CachePolicy, keyer: CacheKeyer = .init(), fillLease: Duration = .seconds(10),
            fillWait: Duration = .seconds(10), observer: (@Sendable (CacheEvent) -> Void)? = nil, background: BackgroundWork? = nil
        ) {
            self.background = background
            self.policy = policy
            self.keyer = keyer
            self.fillLease = fillLease
            self.fillWait = fillWait
            self.observer = observer
        }
    }

    public let configuration: Configuration
    public let store: any CacheStore
    let coordinator: (any CacheFillCoordinator)?
    let clock: any ToolOpsClock
    let flights = SingleFlight<CacheKey, ToolResult>()
    let metrics: CacheMetrics

    /// - Parameter clock: a wall clock, the same as the store's. Defaults to ``WallClock``.
    public init(_ configuration: Configuration, store: any CacheStore, clock: any ToolOpsClock = WallClock()) throws(ToolOpsError) {
        guard configuration.fillLease > .zero, configuration.fillWait >= .zero else {
            throw ToolOpsError(.invalidConfiguration, "fillLease must be positive and fillWait not negative")
        }
        guard configuration.policy.refreshAhead == nil || configuration.background != nil else {
            throw ToolOpsError(.invalidConfiguration, "refreshAhead needs a BackgroundWork (configuration.background) run as a service")
        }
        self.configuration = configuration
        self.store = store
        self.coordinator = store as? any CacheFillCoordinator
        self.clock = clock
        self.metrics = CacheMetrics()
    }

    var policy: CachePolicy { configuration.policy }

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        guard policy.shouldCache(call) else {
            metrics.bypass.increment()
            return try await next.run(call)
        }
        let key: CacheKey
        do {
            key = try configuration.keyer.key(for: call)
        } catch {
            failed("key", error)
            return try await next.run(call)
        }
        let entry: CacheEntry?
        do {
            entry = try await store.get(key)
        } catch {
            failed("get", error)
            return try await next.run(call)
        }
        let now = clock.now
        if let entry, entry.isFresh(at: now) {
            metrics.hit.increment()
            configuration.observer?(.hit(key))
            if let fraction = policy.refreshAhead, entry.failure == nil,
                now - entry.storedAt >= (entry.freshUntil - entry.storedAt) * fraction
            {
                refreshInBackground(call, key: key, next: next)
            }
            return try served(entry, as: "hit")
        }
        return try await fill(call, key: key, next: next, stale: entry.flatMap { $0.failure == nil ? $0 : nil })
    }

    /// Runs the tool once per key in this process; other callers share the outcome.
    func fill(_ call: ToolCall, key: CacheKey, next: any ToolRunner, stale: CacheEntry?) async throws -> ToolResult {
        while true {
            switch await flights.join(key) {
            case .follower(.failure(let error)) where error is CancellationError && !Task.isCancelled:
                continue  // the leader was cancelled, not us: lead or follow anew
            case .follower(let outcome):
                metrics.coalesced.increment()
                configuration.observer?(.coalesced(key))
                return try outcome.get()
            case .leader:
                let outcome: Result<ToolResult, any Error>
                do { outcome = .success(try await lead(call, key: key, next: next, stale: stale)) } catch { outcome = .failure(error) }
                flights.finish(key, with: outcome)
                return try outcome.get()
            }
        }
    }

    /// The leader's work: coordinate with other replicas, run the tool, store the result.
    func lead(_ call: ToolCall, key: CacheKey, next: any ToolRunner, stale: CacheEntry?) async throws -> ToolResult {
        var lease: CacheFillLease?
        if let coordinator {
            let deadline = clock.now + configuration.fillWait
            while true {
                do {
                    lease = try await coordinator.acquireFill(key, lease: configuration.fillLease)
                } catch {
                    failed("lease", error)
                    break
                }
                if lease != nil { break }
                // Someone else fills it: wait for them (woken when they store or give up).
                let remaining = deadline - clock.now
                if remaining <= .zero { break }
                await coordinator.waitForFill(key, timeout: remaining)
                try Task.checkCancellation()
                if let entry = try? await store.get(key), entry.isFresh(at: clock.now) {
                    metrics.coalesced.increment()
                    configuration.observer?(.coalesced(key))
                    return try served(entry, as: "hit")
                }
            }
        }
        let outcome: Result<ToolResult, any Error>
        do { outcome = .success(try await fillNow(call, key: key, next: next, stale: stale)) } catch { outcome = .failure(error) }
        // Released after the entry is stored, so woken waiters find it. Coordinators release
        // without waiting for a round trip, and whether or not this call was cancelled.
        if let lease, let coordinator { await coordinator.releaseFill(lease) }
        return try outcome.get()
    }

    /// A miss: runs the tool and stores its result, or serves a stale entry if it fails.
    private func fillNow(_ call: ToolCall, key: CacheKey, next: any ToolRunner, stale: CacheEntry?) async throws -> ToolResult {
        metrics.miss.increment()
        configuration.observer?(.miss(key))
        do {
            let result = try await next.run(call)
            await store(result, for: call, key: key)
            return result
        } catch {
            if let stale, !stale.isExpired(at: clock.now), !(error is CancellationError) {
                metrics.stale.increment()
                configuration.observer?(.servedStale(key, error: error))
                return try served(stale, as: "stale")
            }
            if let negativeTTL = policy.negativeTTL, !(error is CancellationError) {
                let now = clock.now
                let entry = CacheEntry(
                    result: ToolResult(.null), tool: call.tool, tags: Set(call.tags.map { $0.lowercased() }),
                    storedAt: now, freshUntil: now + negativeTTL, failure: String(describing: error))
                do { try await store.set(key, entry, encodedValue: nil) } catch { failed("set", error) }
            }
            throw error
        }
    }

    func served(_ entry: CacheEntry, as kind: String) throws -> ToolResult {
        if let failure = entry.failure {
            throw ToolOpsError(.cachedFailure, "\(entry.tool) failed recently (cached): \(failure)")
        }
        var result = entry.result
        result.metadata["cache"] = kind
        return result
    }

    /// Stores a fresh result, unless it is too large. Failures are counted, not thrown.
    func store(_ result: ToolResult, for call: ToolCall, key: CacheKey) async {
        let encoded: [UInt8]
        do { encoded = try result.value.canonicalEncoding() } catch {
            failed("encode", error)
            return
        }
        let size = encoded.count + result.metadata.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        guard size <= policy.maximumEntryBytes else {
            metrics.tooLarge.increment()
            configuration.observer?(.tooLarge(key, bytes: size))
            return
        }
        let now = clock.now
        let freshUntil = now + policy.jitteredTTL(for: call.tool)
        let entry = CacheEntry(
            result: result, tool: call.tool, tags: Set(call.tags.map { $0.lowercased() }), storedAt: now,
            freshUntil: freshUntil, expiresAt: freshUntil + (policy.staleIfError ?? .zero))
        do { try await store.set(key, entry, encodedValue: encoded) } catch { failed("set", error) }
    }

    /// One refresh per key in this process (and, with a coordinator, in the cluster), run by
    /// ``Configuration/background``; skipped when it takes no job now.
    func refreshInBackground(_ call: ToolCall, key: CacheKey, next: any ToolRunner) {
        guard let background = configuration.background, flights.tryLead(key) else { return }
        let accepted = background.submit { [self] in
            var outcome: Result<ToolResult, any Error> = .failure(CancellationError())
            var lease: CacheFillLease?
            // A job started at shutdown runs cancelled: it only lets go of the flight.
            if let coordinator, !Task.isCancelled {
                lease = try? await coordinator.acquireFill(key, lease: configuration.fillLease)
            }
            if !Task.isCancelled && (coordinator == nil || lease != nil) {
                do {
                    let result = try await next.run(call)
                    await store(result, for: call, key: key)
                    outcome = .success(result)
                } catch {
                    outcome = .failure(error)
                }
            }
            if let lease, let coordinator { await coordinator.releaseFill(lease) }
            // Followers that joined meanwhile are misses: a failed refresh makes them lead anew.
            flights.finish(key, with: outcome.flatMapError { _ in .failure(CancellationError()) })
        }
        if accepted {
            configuration.observer?(.refreshStarted(key))
        } else {
            flights.finish(key, with: .failure(CancellationError()))
        }
    }

    func failed(_ operation: String, _ error: any Error) {
        metrics.errors(operation).increment()
        configuration.observer?(.storeFailed(operation: operation, error: error))
    }

    // MARK: Invalidation

    /// Removes the entry `call` would hit.
    public func invalidate(_ call: ToolCall) async throws { try await store.delete(try configuration.keyer.key(for: call)) }
    /// Removes every entry tagged `tag` (case-insensitive); returns how many.
    @discardableResult
    public func invalidate(tag: String) async throws -> Int { try await store.invalidate(tag: tag.lowercased()) }
    /// Removes every entry of `tool`; returns how many.
    @discardableResult
    public func invalidate(tool: ToolID) async throws -> Int { try await store.invalidate(tool: tool) }
}

/// `toolops_cache_lookups_total{result}` and `toolops_cache_store_errors_total{operation}`.
struct CacheMetrics: Sendable {
    let hit = Counter(label: "toolops_cache_lookups_total", dimensions: [("result", "hit")])
    let miss = Counter(label: "toolops_cache_lookups_total", dimensions: [("result", "miss")])
    let stale = Counter(label: "toolops_cache_lookups_total", dimensions: [("result", "stale")])
    let coalesced = Counter(label: "toolops_cache_lookups_total", dimensions: [("result", "coalesced")])
    let bypass = Counter(label: "toolops_cache_lookups_total", dimensions: [("result", "bypass")])
    let tooLarge = Counter(label: "toolops_cache_skipped_total", dimensions: [("reason", "too_large")])
    let errorCounters: [String: Counter] = Dictionary(
        uniqueKeysWithValues: ["key", "get", "set", "encode", "lease"].map {
            ($0, Counter(label: "toolops_cache_store_errors_total", dimensions: [("operation", $0)]))
        })

    func errors(_ operation: String) -> Counter {
        errorCounters[operation] ?? Counter(label: "toolops_cache_store_errors_total", dimensions: [("operation", operation)])
    }
}
