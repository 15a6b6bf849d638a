import Foundation
import Testing
import ToolOpsCore
import ToolOpsTesting
@testable import ToolOpsCache

func entry(_ value: JSONValue, tool: String = "search:web", tags: Set<String> = [], at now: ClockInstant, ttl: Duration = .seconds(60), grace: Duration = .zero) -> CacheEntry {
    CacheEntry(result: ToolResult(value), tool: try! ToolID(tool), tags: tags, storedAt: now, freshUntil: now + ttl, expiresAt: now + ttl + grace)
}

func temporaryDirectory() -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("toolops-cache-\(UUID().uuidString.prefix(8))").path
    return path
}

@Suite("Memory cache store")
struct MemoryCacheStoreTests {
    @Test func lruByEntriesAndBytesWithTTL() async throws {
        let clock = ManualClock()
        let store = MemoryCacheStore(.init(maximumEntries: 3, maximumBytes: 1_000), clock: clock)
        let keys = try (0..<5).map { try CacheKey("k\($0)") }
        for key in keys[0..<3] { try await store.set(key, entry(.string(key.value), at: clock.now)) }
        _ = try await store.get(keys[0])  // k0 is now the most recently used
        try await store.set(keys[3], entry("k3", at: clock.now))
        #expect(try await store.get(keys[1]) == nil)  // least recently used went first
        #expect(try await store.get(keys[0])?.result.value == "k0")
        #expect(store.count == 3)
        // Bytes: one big entry pushes out the others.
        store.store(keys[4], entry("big", at: clock.now), size: 900)
        #expect(store.bytes <= 1_000)
        #expect(try await store.get(keys[4]) != nil)
        // An entry larger than the whole store is not kept.
        store.store(keys[1], entry("huge", at: clock.now), size: 5_000)
        #expect(try await store.get(keys[1]) == nil)
        // TTL.
        clock.advance(by: .seconds(61))
        #expect(try await store.get(keys[4]) == nil)
    }

    @Test func invalidationByTagAndTool() async throws {
        let clock = ManualClock()
        let store = MemoryCacheStore(clock: clock)
        try await store.set(try CacheKey("a"), entry(1, tags: ["news"], at: clock.now))
        try await store.set(try CacheKey("b"), entry(2, tags: ["news", "sport"], at: clock.now))
        try await store.set(try CacheKey("c"), entry(3, tool: "maps:route", at: clock.now))
        #expect(try await store.invalidate(tag: "news") == 2)
        #expect(try await store.get(try CacheKey("b")) == nil)
        #expect(try await store.invalidate(tag: "sport") == 0)  // indexes were cleaned
        #expect(try await store.invalidate(tool: try ToolID("maps:route")) == 1)
        #expect(store.count == 0)
    }
}

@Suite("File cache store")
struct FileCacheStoreTests {
    @Test func sharedBetweenInstancesAndExpiring() async throws {
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = ManualClock()
        let writer = try FileCacheStore(path: path, clock: clock)
        let reader = try FileCacheStore(path: path, clock: clock)  // as another process would
        let key = try CacheKey("search:web:abc")
        let stored = entry(["answer": 42], tags: ["news"], at: clock.now)
        try await writer.set(key, stored)
        #expect(try await reader.get(key) == stored)
        // A delete by one instance is a miss for the other, well before the TTL.
        try await writer.delete(key)
        #expect(try await reader.get(key) == nil)
        #expect(!FileManager.default.fileExists(atPath: reader.file(for: key).file))
        // Written again, it expires for both.
        try await writer.set(key, stored)
        #expect(try await reader.get(key) == stored)
        clock.advance(by: .seconds(61))
        #expect(try await reader.get(key) == nil)
    }

    @Test func corruptAndTruncatedEntriesAreMissesAndRemoved() async throws {
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = ManualClock()
        let store = try FileCacheStore(path: path, clock: clock)
        for (index, damage) in ["truncate", "garbage", "empty"].enumerated() {
            let key = try CacheKey("key\(index)")
            try await store.set(key, entry(.string(String(repeating: "x", count: 100)), at: clock.now))
            let file = store.file(for: key).file
            let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
            switch damage {
            case "truncate": try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: file))
            case "garbage": try Data((0..<200).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: file))
            default: try Data().write(to: URL(fileURLWithPath: file))
            }
            #expect(try await store.get(key) == nil)
            #expect(!FileManager.default.fileExists(atPath: file))
            // And the key works again afterwards.
            try await store.set(key, entry("fine", at: clock.now))
            #expect(try await store.get(key)?.result.value == "fine")
        }
    }

    @Test func sizeBoundEvictsExpiredThenOldest() async throws {
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = ManualClock()
        let store = try FileCacheStore(path: path, configuration: .init(maximumBytes: 20_000), clock: clock)
        let payload = JSONValue.string(String(repeating: "y", count: 1_000))
        // Ten long-lived entries, then a short-lived one: the expired entry is *newer* than
        // these, so only an expired-first pass removes it before them.
        for index in 0..<10 {
            try await store.set(try CacheKey("old\(index)"), entry(payload, at: clock.now))
            usleep(15_000)  // distinct modification times: the kernel stamps files from a coarse clock (a tick of 4–10 ms)
        }
        let short = try CacheKey("short-lived")
        try await store.set(short, entry(payload, at: clock.now, ttl: .seconds(1)))
        usleep(15_000)
        clock.advance(by: .seconds(2))
        for index in 0..<10 {
            try await store.set(try CacheKey("new\(index)"), entry(payload, at: clock.now))
            usleep(15_000)
        }
        #expect(store.bytes <= 20_000)
        #expect(!FileManager.default.fileExists(atPath: store.file(for: short).file))  // expired: first to go
        #expect(FileManager.default.fileExists(atPath: store.file(for: try CacheKey("old9")).file))  // older, but live
        #expect(!FileManager.default.fileExists(atPath: store.file(for: try CacheKey("old0")).file))  // then the oldest
        #expect(try await store.get(try CacheKey("new9")) != nil)  // the newest survive
    }

    @Test func invalidationByTagAndTool() async throws {
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = ManualClock()
        let store = try FileCacheStore(path: path, clock: clock)
        try await store.set(try CacheKey("a"), entry(1, tags: ["news"], at: clock.now))
        try await store.set(try CacheKey("b"), entry(2, tool: "maps:route", at: clock.now))
        #expect(try await store.invalidate(tag: "news") == 1)
        #expect(try await store.get(try CacheKey("a")) == nil)
        #expect(try await store.invalidate(tool: try ToolID("maps:route")) == 1)
        #expect(try await store.get(try CacheKey("b")) == nil)
    }
}

/// The file cache store with files other processes (or people) left behind.
@Suite("File cache store maintenance", .timeLimit(.minutes(1)))
struct FileCacheStoreMaintenanceTests {
    @Test func staleTemporaryFilesAreRemovedAfterAMinuteOnly() async throws {
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        // The store's clock must read wall time: it is compared with file modification times.
        let clock = ManualClock(now: WallClock().now)
        let store = try FileCacheStore(path: path, clock: clock)
        let key = try CacheKey("k")
        try await store.set(key, entry(1, at: clock.now))
        let temporary = store.file(for: key).file + ".999.1.tmp"  // a writer died between write and rename
        try Data("partial".utf8).write(to: URL(fileURLWithPath: temporary))
        try await store.invalidate(tag: "none")  // scans the shards
        #expect(FileManager.default.fileExists(atPath: temporary))  // might be a live writer's
        clock.advance(by: .seconds(61))
        try await store.invalidate(tag: "none")
        #expect(!FileManager.default.fileExists(atPath: temporary))
        #expect(FileManager.default.fileExists(atPath: store.file(for: key).file))  // entries untouched
    }

    @Test func aRemovedShardDirectoryIsRecreated() async throws {
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = ManualClock()
        let store = try FileCacheStore(path: path, clock: clock)
        let key = try CacheKey("k")
        try await store.set(key, entry(1, at: clock.now))
        try FileManager.default.removeItem(atPath: store.file(for: key).directory)
        #expect(try await store.get(key) == nil)
        try await store.set(key, entry(2, at: clock.now))
        #expect(try await store.get(key)?.result.value == 2)
    }

    @Test func corruptEntriesMetDuringInvalidationAreRemovedAndNotCounted() async throws {
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = ManualClock()
        let store = try FileCacheStore(path: path, clock: clock)
        try await store.set(try CacheKey("good"), entry(1, tags: ["news"], at: clock.now))
        let corrupt = try CacheKey("corrupt")
        try await store.set(corrupt, entry(2, tags: ["news"], at: clock.now))
        try Data("not an entry".utf8).write(to: URL(fileURLWithPath: store.file(for: corrupt).file))
        #expect(try await store.invalidate(tag: "news") == 1)  // only the readable entry counts
        #expect(!FileManager.default.fileExists(atPath: store.file(for: corrupt).file))
        #expect(try await store.get(try CacheKey("good")) == nil)
    }

    @Test func removeAllEmptiesTheStore() async throws {
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = ManualClock()
        let store = try FileCacheStore(path: path, clock: clock)
        for index in 0..<20 { try await store.set(try CacheKey("k\(index)"), entry(.integer(Int64(index)), at: clock.now)) }
        #expect(store.bytes > 0)
        try await store.removeAll()
        #expect(store.bytes == 0)
        for index in 0..<20 { #expect(try await store.get(try CacheKey("k\(index)")) == nil) }
    }
}
