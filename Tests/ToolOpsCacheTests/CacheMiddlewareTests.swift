import Synchronization
import Testing
import ToolOpsCore
import ToolOpsTesting
@testable import ToolOpsCache

/// Counts runs of a tool that answers with its arguments (optionally slowly, or failing).
final class CountingTool: ToolRunner {
    let runs = Atomic<Int>(0)
    let failing = Atomic<Bool>(false)
    let delay: Duration
    let firstRunDelay: Duration
    let value: JSONValue?
    init(delay: Duration = .zero, firstRunDelay: Duration? = nil, value: JSONValue? = nil) {
        self.delay = delay
        self.firstRunDelay = firstRunDelay ?? delay
        self.value = value
    }
    func run(_ call: ToolCall) async throws -> ToolResult {
        let run = runs.add(1, ordering: .relaxed).newValue
        let pause = run == 1 ? firstRunDelay : delay
        if pause > .zero { try await Task.sleep(for: pause) }
        if failing.load(ordering: .relaxed) { throw ToolOpsError(.invalidInput, "tool failed") }
        return ToolResult(value ?? ["echo": call.arguments, "run": .integer(Int64(runs.load(ordering: .relaxed)))])
    }
    var count: Int { runs.load(ordering: .relaxed) }
}

/// A store that always fails.
struct BrokenStore: CacheStore {
    func get(_ key: CacheKey) async throws -> CacheEntry? { throw ToolOpsError(.storeUnavailable, "down") }
    func set(_ key: CacheKey, _ entry: CacheEntry, encodedValue: [UInt8]?) async throws { throw ToolOpsError(.storeUnavailable, "down") }
    func delete(_ key: CacheKey) async throws { throw ToolOpsError(.storeUnavailable, "down") }
    func invalidate(tag: String) async throws -> Int { throw ToolOpsError(.storeUnavailable, "down") }
    func invalidate(tool: ToolID) async throws -> Int { throw ToolOpsError(.storeUnavailable, "down") }
    func removeAll() async throws { throw ToolOpsError(.storeUnavailable, "down") }
}

@Suite("Cache middleware", .timeLimit(.minutes(1)))
struct CacheMiddlewareTests {
    let clock = ManualClock()

    func cache(_ policy: CachePolicy? = nil, store: (any CacheStore)? = nil, keyer: CacheKeyer = .init()) throws -> CacheMiddleware {
        try CacheMiddleware(
            .init(policy: try policy ?? CachePolicy(jitter: 0), keyer: keyer),
            store: store ?? MemoryCacheStore(clock: clock), clock: clock)
    }

    @Test func hitMissAndTTL() async throws {
        let tool = CountingTool()
        let cache = try cache(try CachePolicy(defaultTTL: .seconds(30), jitter: 0))
        let first = try await cache.run(try call(), next: tool)
        #expect(first.metadata["cache"] == nil)
        let second = try await cache.run(try call(), next: tool)
        #expect(second.metadata["cache"] == "hit")
        #expect(second.value == first.value)
        #expect(tool.count == 1)
        clock.advance(by: .seconds(31))
        _ = try await cache.run(try call(), next: tool)
        #expect(tool.count == 2)
    }

    @Test func concurrentIdenticalCallsRunTheToolOnce() async throws {
        let tool = CountingTool(delay: .milliseconds(50))
        let cache = try cache()
        try await withThrowingTaskGroup(of: ToolResult.self) { group in
            for _ in 0..<100 { group.addTask { try await cache.run(try call(), next: tool) } }
            var values: Set<JSONValue> = []
            for try await result in group { values.insert(result.value) }
            #expect(values.count == 1)
        }
        #expect(tool.count == 1)
        #expect(cache.flights.activeFlights == 0)
    }

    @Test func aCancelledLeaderDoesNotFailItsFollowers() async throws {
        // The first run (the leader's) lasts until it is cancelled; later runs answer at once.
        let tool = CountingTool(firstRunDelay: .seconds(60))
        let cache = try cache()
        let key = try CacheKeyer().key(for: try call())
        let leader = Task { try await cache.run(try call(), next: tool) }
        #expect(await eventually { tool.count == 1 })  // the leader runs the tool
        let follower = Task { try await cache.run(try call(), next: tool) }
        #expect(await eventually { cache.flights.followers(of: key) == 1 })  // and the follower waits for it
        leader.cancel()
        await #expect(throws: CancellationError.self) { try await leader.value }
        // The follower takes over: it runs the tool itself (run 2) instead of failing.
        let result = try await follower.value
        #expect(result.value["run"] == 2)
        #expect(tool.count == 2)
        #expect(cache.flights.activeFlights == 0)
    }

    @Test func tenantsAreIsolated() async throws {
        let tool = CountingTool()
        let cache = try cache()
        _ = try await cache.run(try call(tenant: "a"), next: tool)
        let other = try await cache.run(try call(tenant: "b"), next: tool)
        #expect(other.metadata["cache"] == nil)
        #expect(tool.count == 2)
    }

    @Test func unsafeToolsAreNeverCached() async throws {
        let tool = CountingTool()
        let cache = try cache()
        for _ in 0..<3 { _ = try await cache.run(try call(tags: ["Write"]), next: tool) }
        #expect(tool.count == 3)
    }

    @Test func errorsAreNotCachedUnlessAskedBriefly() async throws {
        let tool = CountingTool()
        tool.failing.store(true, ordering: .relaxed)
        let cache = try cache()
        for _ in 0..<2 { await #expect(throws: ToolOpsError.self) { try await cache.run(try call(), next: tool) } }
        #expect(tool.count == 2)

        let negative = try self.cache(try CachePolicy(jitter: 0, negativeTTL: .seconds(5)))
        let other = CountingTool()
        other.failing.store(true, ordering: .relaxed)
        await #expect(throws: ToolOpsError.self) { try await negative.run(try call(), next: other) }
        let cached = await #expect(throws: ToolOpsError.self) { try await negative.run(try call(), next: other) }
        #expect(cached?.code == .cachedFailure)
        #expect(other.count == 1)
        clock.advance(by: .seconds(6))
        other.failing.store(false, ordering: .relaxed)
        _ = try await negative.run(try call(), next: other)
        #expect(other.count == 2)
    }

    @Test func staleIfErrorServesTheExpiredEntryWhenTheToolFails() async throws {
        let tool = CountingTool()
        let cache = try cache(try CachePolicy(defaultTTL: .seconds(10), jitter: 0, staleIfError: .seconds(60)))
        let fresh = try await cache.run(try call(), next: tool)
        clock.advance(by: .seconds(11))
        tool.failing.store(true, ordering: .relaxed)
        let stale = try await cache.run(try call(), next: tool)
        #expect(stale.metadata["cache"] == "stale")
        #expect(stale.value == fresh.value)
        // A working tool replaces it.
        tool.failing.store(false, ordering: .relaxed)
        let renewed = try await cache.run(try call(), next: tool)
        #expect(renewed.metadata["cache"] == nil)
        #expect(renewed.value != fresh.value)
        // Past the grace period there is nothing to fall back on.
        clock.advance(by: .seconds(100))
        tool.failing.store(true, ordering: .relaxed)
        await #expect(throws: ToolOpsError.self) { try await cache.run(try call(), next: tool) }
    }

    @Test func bigResultsAreCachedUpToTheLimitAndOversizedOnesStillSucceed() async throws {
        let megabyte = JSONValue.string(String(repeating: "m", count: 1 << 20))
        let big = CountingTool(value: megabyte)
        let cache = try cache(try CachePolicy(jitter: 0, maximumEntryBytes: 2 << 20))
        _ = try await cache.run(try call(), next: big)
        #expect(try await cache.run(try call(), next: big).metadata["cache"] == "hit")
        #expect(big.count == 1)

        let small = try self.cache(try CachePolicy(jitter: 0, maximumEntryBytes: 1_000))
        let oversized = CountingTool(value: megabyte)
        for _ in 0..<2 { #expect(try await small.run(try call(), next: oversized).value == megabyte) }
        #expect(oversized.count == 2)
    }

    @Test func aFailingStoreNeverFailsTheCall() async throws {
        let tool = CountingTool()
        let failures = Mutex<[String]>([])
        let cache = try CacheMiddleware(
            .init(policy: try CachePolicy(jitter: 0), observer: { event in
                if case .storeFailed(let operation, let error) = event, (error as? ToolOpsError)?.code == .storeUnavailable {
                    failures.withLock { $0.append(operation) }
                }
            }),
            store: BrokenStore(), clock: clock)
        for run in 1...2 { #expect(try await cache.run(try call(), next: tool).value["run"] == .integer(Int64(run))) }
        #expect(tool.count == 2)
        // Each failed lookup is reported with its operation (the call then runs uncached: no write).
        #expect(failures.withLock { $0 } == ["get", "get"])
    }

    @Test func invalidationByCallTagAndTool() async throws {
        let tool = CountingTool()
        let cache = try cache()
        _ = try await cache.run(try call(tags: ["News"]), next: tool)
        try await cache.invalidate(try call(tags: ["News"]))
        _ = try await cache.run(try call(tags: ["News"]), next: tool)
        #expect(tool.count == 2)
        #expect(try await cache.invalidate(tag: "NEWS") == 1)
        _ = try await cache.run(try call(tags: ["News"]), next: tool)
        #expect(tool.count == 3)
        #expect(try await cache.invalidate(tool: try ToolID("search:web")) == 1)
        _ = try await cache.run(try call(tags: ["News"]), next: tool)
        #expect(tool.count == 4)
    }

    @Test func refreshAheadRenewsInTheBackgroundOnce() async throws {
        let tool = CountingTool(delay: .milliseconds(200))
        let background = try BackgroundWork()
        let cache = try CacheMiddleware(
            .init(policy: try CachePolicy(defaultTTL: .seconds(100), jitter: 0, refreshAhead: 0.8), background: background),
            store: MemoryCacheStore(clock: clock), clock: clock)
        let runner = Task { try await background.run() }
        defer { runner.cancel() }
        let first = try await cache.run(try call(), next: tool)
        clock.advance(by: .seconds(85))
        for _ in 0..<5 { #expect(try await cache.run(try call(), next: tool).value == first.value) }
        // One background refresh (the service may start after the first hits: they skip it),
        // then the renewed entry is served.
        let deadline = ContinuousClock.now + .seconds(5)
        while tool.count < 2 && ContinuousClock.now < deadline {
            _ = try await cache.run(try call(), next: tool)
            try await Task.sleep(for: .milliseconds(5))
        }
        while cache.flights.activeFlights > 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(tool.count == 2)
        let renewed = try await cache.run(try call(), next: tool)
        #expect(renewed.metadata["cache"] == "hit")
        #expect(renewed.value != first.value)
    }

    @Test func refreshingAheadNeedsBackgroundWork() throws {
        #expect(throws: ToolOpsError.self) {
            try CacheMiddleware(.init(policy: try CachePolicy(refreshAhead: 0.5)), store: MemoryCacheStore(clock: clock), clock: clock)
        }
    }

    @Test func aRefreshIsSkippedWhileTheBackgroundWorkIsNotRunning() async throws {
        let tool = CountingTool()
        let cache = try CacheMiddleware(
            .init(policy: try CachePolicy(defaultTTL: .seconds(100), jitter: 0, refreshAhead: 0.5), background: try BackgroundWork()),
            store: MemoryCacheStore(clock: clock), clock: clock)
        _ = try await cache.run(try call(), next: tool)
        clock.advance(by: .seconds(60))
        // Due for a refresh, but nothing runs it: the hit is served and no flight is left
        // behind for later callers to wait on.
        #expect(try await cache.run(try call(), next: tool).metadata["cache"] == "hit")
        #expect(cache.flights.activeFlights == 0)
        clock.advance(by: .seconds(41))
        #expect(try await cache.run(try call(), next: tool).metadata["cache"] == nil)
        #expect(tool.count == 2)
    }
}

/// A memory store that coordinates fills as the test says: another filler always holds the
/// lease (and is slow), or acquiring a lease fails.
final class CoordinatedStore: CacheStore, CacheFillCoordinator {
    enum Lease: Sendable { case heldElsewhere, fails }
    let inner: MemoryCacheStore
    let lease: Lease
    let clock: ManualClock
    let waits = Mutex<[Duration]>([])
    init(lease: Lease, clock: ManualClock) {
        self.lease = lease
        self.clock = clock
        self.inner = MemoryCacheStore(clock: clock)
    }
    func get(_ key: CacheKey) async throws -> CacheEntry? { try await inner.get(key) }
    func set(_ key: CacheKey, _ entry: CacheEntry, encodedValue: [UInt8]?) async throws { try await inner.set(key, entry, encodedValue: encodedValue) }
    func delete(_ key: CacheKey) async throws { try await inner.delete(key) }
    func invalidate(tag: String) async throws -> Int { try await inner.invalidate(tag: tag) }
    func invalidate(tool: ToolID) async throws -> Int { try await inner.invalidate(tool: tool) }
    func removeAll() async throws { try await inner.removeAll() }
    func acquireFill(_ key: CacheKey, lease: Duration) async throws -> CacheFillLease? {
        switch self.lease {
        case .heldElsewhere: return nil
        case .fails: throw ToolOpsError(.storeUnavailable, "lease script failed")
        }
    }
    func releaseFill(_ lease: CacheFillLease) async {}
    /// The other filler is alive but slow: the wait always runs out (time passes on the test's clock).
    func waitForFill(_ key: CacheKey, timeout: Duration) async {
        waits.withLock { $0.append(timeout) }
        clock.advance(by: timeout)
    }
}

/// Records every cache event as a short string.
final class CacheEvents: Sendable {
    private let list = Mutex<[String]>([])
    var observer: @Sendable (CacheEvent) -> Void {
        { event in
            let text: String
            switch event {
            case .hit: text = "hit"
            case .miss: text = "miss"
            case .servedStale: text = "stale"
            case .coalesced: text = "coalesced"
            case .tooLarge(_, let bytes): text = "tooLarge(\(bytes > 100))"
            case .storeFailed(let operation, _): text = "storeFailed(\(operation))"
            case .refreshStarted: text = "refresh"
            }
            self.list.withLock { $0.append(text) }
        }
    }
    var all: [String] { list.withLock { $0 } }
}

@Suite("Cache middleware: events and fill coordination", .timeLimit(.minutes(1)))
struct CacheCoordinationTests {
    let clock = ManualClock()

    @Test func theObserverSeesWhatTheCacheDid() async throws {
        let events = CacheEvents()
        let cache = try CacheMiddleware(
            .init(policy: try CachePolicy(defaultTTL: .seconds(10), jitter: 0, maximumEntryBytes: 1_000, staleIfError: .seconds(60)),
                  observer: events.observer),
            store: MemoryCacheStore(clock: clock), clock: clock)
        let tool = CountingTool()
        _ = try await cache.run(try call(), next: tool)
        _ = try await cache.run(try call(), next: tool)
        _ = try await cache.run(try call("search:web", ["big": .string(String(repeating: "x", count: 2_000))]), next: tool)
        clock.advance(by: .seconds(11))
        tool.failing.store(true, ordering: .relaxed)
        #expect(try await cache.run(try call(), next: tool).metadata["cache"] == "stale")
        #expect(events.all == ["miss", "hit", "miss", "tooLarge(true)", "miss", "stale"])
    }

    @Test func aSlowFillerElsewhereIsWaitedForOnlyUntilFillWait() async throws {
        let store = CoordinatedStore(lease: .heldElsewhere, clock: clock)
        let events = CacheEvents()
        let cache = try CacheMiddleware(
            .init(policy: try CachePolicy(jitter: 0), fillWait: .seconds(3), observer: events.observer), store: store, clock: clock)
        let tool = CountingTool()
        let started = clock.now
        let result = try await cache.run(try call(), next: tool)
        // It waited out fillWait (the other filler never delivered), then ran the tool itself.
        #expect(store.waits.withLock { $0 } == [.seconds(3)])
        #expect(clock.now - started == .seconds(3))
        #expect(tool.count == 1 && result.value["run"] == 1)
        #expect(events.all == ["miss"])
        #expect(try await cache.run(try call(), next: tool).metadata["cache"] == "hit")  // and stored it
    }

    @Test func aFailedLeaseAcquisitionIsReportedAndTheCallRuns() async throws {
        let store = CoordinatedStore(lease: .fails, clock: clock)
        let events = CacheEvents()
        let cache = try CacheMiddleware(.init(policy: try CachePolicy(jitter: 0), observer: events.observer), store: store, clock: clock)
        let tool = CountingTool()
        #expect(try await cache.run(try call(), next: tool).value["run"] == 1)
        #expect(events.all == ["storeFailed(lease)", "miss"])
        #expect(store.waits.withLock { $0 }.isEmpty)  // nobody to wait for
    }
}
