import Synchronization
import Testing
import ToolOpsCore
import ToolOpsTestSupport
import ToolOpsTesting
@testable import ToolOpsCache

/// A shared cache store (and fill coordinator) that behaves as the test says.
final class ScriptedCacheStore: CacheStore, CacheFillCoordinator {
    let behaviour = StoreBehaviour()
    let inner = MemoryCacheStore()
    let waitedForFill = Counter()
    func get(_ key: CacheKey) async throws -> CacheEntry? {
        try await behaviour.pass()
        return try await inner.get(key)
    }
    func set(_ key: CacheKey, _ entry: CacheEntry, encodedValue: [UInt8]?) async throws {
        try await behaviour.pass()
        try await inner.set(key, entry, encodedValue: encodedValue)
    }
    func delete(_ key: CacheKey) async throws { try await inner.delete(key) }
    func invalidate(tag: String) async throws -> Int { try await inner.invalidate(tag: tag) }
    func invalidate(tool: ToolID) async throws -> Int { try await inner.invalidate(tool: tool) }
    func removeAll() async throws { try await inner.removeAll() }
    func acquireFill(_ key: CacheKey, lease: Duration) async throws -> CacheFillLease? {
        try await behaviour.pass()
        return CacheFillLease(key: key, token: "shared")
    }
    func releaseFill(_ lease: CacheFillLease) async {}
    func waitForFill(_ key: CacheKey, timeout: Duration) async { waitedForFill.increment() }
}

@Suite("Fallback cache store", .timeLimit(.minutes(1)))
struct FallbackCacheStoreTests {
    let key = try! CacheKey("search:web:k")

    func cached(_ value: JSONValue) -> CacheEntry {
        let now = WallClock().now
        return CacheEntry(result: ToolResult(value), tool: try! ToolID("search:web"), storedAt: now, freshUntil: now + .seconds(60))
    }

    @Test func failClosedIsRefusedAtInit() {
        let error = #expect(throws: ToolOpsError.self) { try FallbackCacheStore(primary: MemoryCacheStore(), mode: .failClosed) }
        #expect(error?.code == .invalidConfiguration)
    }

    @Test func aStalledPrimaryIsGivenUpOnAndTheLocalStoreServes() async throws {
        let primary = ScriptedCacheStore()
        let store = try FallbackCacheStore(primary: primary, deadline: .milliseconds(50), probeInterval: .seconds(30))
        try await store.set(key, cached("shared"), encodedValue: nil)
        primary.behaviour.set(.stall)
        let started = ContinuousClock.now
        #expect(try await store.get(key) == nil)  // the local store has nothing yet
        #expect(try #require(primary.behaviour.cancelRequested.since(started)) < .seconds(1))
        #expect(store.isDegraded && primary.behaviour.cancelled.isSet)
        // Degraded: writes and reads use the local store, without asking the primary.
        let asked = primary.behaviour.entered.current
        try await store.set(key, cached("local"), encodedValue: nil)
        #expect(try await store.get(key)?.result.value == "local")
        #expect(primary.behaviour.entered.current == asked)
        // No cluster-wide fill while degraded: a local lease, and nobody waits for a filler.
        #expect(try await store.acquireFill(key, lease: .seconds(1))?.token == "local")
        await store.waitForFill(key, timeout: .seconds(5))
        #expect(primary.waitedForFill.current == 0)
    }

    @Test func theLocalStoreIsEmptiedWhenThePrimaryIsBack() async throws {
        let primary = ScriptedCacheStore()
        let local = MemoryCacheStore()
        let store = try FallbackCacheStore(primary: primary, fallback: local, deadline: .milliseconds(50), probeInterval: .milliseconds(20))
        primary.behaviour.set(.down)
        try await store.set(key, cached("written during the outage"), encodedValue: nil)
        #expect(try await local.get(key) != nil)
        primary.behaviour.set(.answer)
        try await Task.sleep(for: .milliseconds(30))  // the probe interval passes: the next call asks the primary
        #expect(try await store.get(key) == nil)  // the primary's answer (a miss)…
        #expect(!store.isDegraded)
        #expect(try await local.get(key) == nil)  // …and the local copy, which missed invalidations, is gone
    }

    @Test func backgroundProbesAlsoEmptyTheLocalStore() async throws {
        let primary = ScriptedCacheStore()
        let local = MemoryCacheStore()
        let store = try FallbackCacheStore(primary: primary, fallback: local, deadline: .milliseconds(50), probeInterval: .milliseconds(20))
        primary.behaviour.set(.down)
        try await store.set(key, cached("stale"), encodedValue: nil)
        primary.behaviour.set(.answer)
        let probes = Task { await store.runProbes { try await primary.behaviour.pass() } }
        defer { probes.cancel() }
        #expect(await eventually { !store.isDegraded })
        #expect(try await local.get(key) == nil)
    }

    @Test func failOpenRunsWithoutACache() async throws {
        let primary = ScriptedCacheStore()
        let local = MemoryCacheStore()
        let store = try FallbackCacheStore(primary: primary, fallback: local, mode: .failOpen, deadline: .milliseconds(50), probeInterval: .seconds(30))
        try await store.set(key, cached("shared"), encodedValue: nil)
        primary.behaviour.set(.down)
        #expect(try await store.get(key) == nil)  // always a miss
        try await store.set(key, cached("dropped"), encodedValue: nil)
        #expect(try await store.get(key) == nil)
        #expect(try await local.get(key) == nil)  // writes were dropped, not kept locally
        #expect(store.isDegraded)
    }
}
