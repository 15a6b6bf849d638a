import Synchronization
import ToolOpsCore

/// An in-process cache: least-recently-used eviction bounded by entry count and bytes, TTL,
/// and indexes for invalidation by tag and tool. Returned results are values (no aliasing).
///
/// Expiry is checked and the entry removed under one lock, so a concurrent fresh `set` is
/// never dropped by an expiring `get` (a bug of the Go original).
public final class MemoryCacheStore: CacheStore {
    public struct Configuration: Sendable {
        /// Defaults to 10,000 entries.
        public var maximumEntries: Int
        /// Defaults to 256 MiB (the sum of the entries' encoded sizes).
        public var maximumBytes: Int
        public init(maximumEntries: Int = 10_000, maximumBytes: Int = 256 << 20) {
            self.maximumEntries = maximumEntries
            self.maximumBytes = maximumBytes
        }
    }

    struct Node {
        var key: CacheKey
        var entry: CacheEntry
        var size: Int
        /// When this copy is dropped: the entry's expiry, or earlier for a near cache.
        var dropAt: ClockInstant
        var older: Int
        var newer: Int
    }

    /// LRU list over a slab of nodes (indices, no per-entry allocation once grown).
    struct State {
        var index: [CacheKey: Int] = [:]
        var nodes: [Node?] = []
        var free: [Int] = []
        var newest = -1
        var oldest = -1
        var bytes = 0
        var byTag: [String: Set<CacheKey>] = [:]
        var byTool: [ToolID: Set<CacheKey>] = [:]

        mutating func unlink(_ slot: Int) {
            guard let node = nodes[slot] else { return }
            if node.older >= 0 { nodes[node.older]?.newer = node.newer } else { oldest = node.newer }
            if node.newer >= 0 { nodes[node.newer]?.older = node.older } else { newest = node.older }
        }

        mutating func pushNewest(_ slot: Int) {
            nodes[slot]?.older = newest
            nodes[slot]?.newer = -1
            if newest >= 0 { nodes[newest]?.newer = slot }
            newest = slot
            if oldest < 0 { oldest = slot }
        }

        mutating func remove(_ key: CacheKey) -> Bool {
            guard let slot = index.removeValue(forKey: key), let node = nodes[slot] else { return false }
            unlink(slot)
            nodes[slot] = nil
            free.append(slot)
            bytes -= node.size
            for tag in node.entry.tags { byTag[tag]?.remove(key); if byTag[tag]?.isEmpty == true { byTag[tag] = nil } }
            byTool[node.entry.tool]?.remove(key)
            if byTool[node.entry.tool]?.isEmpty == true { byTool[node.entry.tool] = nil }
            return true
        }

        mutating func insert(_ key: CacheKey, _ entry: CacheEntry, size: Int, dropAt: ClockInstant) {
            _ = remove(key)
            let node = Node(key: key, entry: entry, size: size, dropAt: dropAt, older: -1, newer: -1)
            let slot: Int
            if let reused = free.popLast() {
                nodes[reused] = node
                slot = reused
            } else {
                nodes.append(node)
                slot = nodes.count - 1
            }
            index[key] = slot
            pushNewest(slot)
            bytes += size
            for tag in entry.tags { byTag[tag, default: []].insert(key) }
            byTool[entry.tool, default: []].insert(key)
        }

        mutating func touch(_ slot: Int) {
            guard slot != newest else { return }
            unlink(slot)
            pushNewest(slot)
        }
    }

    public let configuration: Configuration
    let clock: any ToolOpsClock
    private let state = Mutex(State())

    /// - Parameter clock: a wall clock (entries carry wall-clock lifetimes). Defaults to ``WallClock``.
    public init(_ configuration: Configuration = .init(), clock: any ToolOpsClock = WallClock()) {
        self.configuration = configuration
        self.clock = clock
    }

    /// Entries currently held (expired ones included until touched or evicted).
    public var count: Int { state.withLock { $0.index.count } }
    /// Their encoded size in bytes.
    public var bytes: Int { state.withLock { $0.bytes } }

    public func get(_ key: CacheKey) async throws -> CacheEntry? { lookup(key) }

    /// The synchronous form of ``get(_:)``.
    public func lookup(_ key: CacheKey) -> CacheEntry? {
        let now = clock.now
        return state.withLock { state -> CacheEntry? in
            guard let slot = state.index[key], let node = state.nodes[slot] else { return nil }
            if now >= node.dropAt {
                _ = state.remove(key)
                return nil
            }
            state.touch(slot)
            return node.entry
        }
    }

    public func set(_ key: CacheKey, _ entry: CacheEntry, encodedValue: [UInt8]?) async throws {
        store(key, entry, size: encodedValue?.count ?? (try? entry.result.value.canonicalEncoding().count) ?? 0)
    }

    /// The synchronous form of ``set(_:_:encodedValue:)``, with the entry's size given;
    /// `keepUntil` drops this copy before the entry expires (a near cache's age bound).
    public func store(_ key: CacheKey, _ entry: CacheEntry, size: Int, keepUntil: ClockInstant? = nil) {
        // An entry bigger than the whole store would only evict everything and then itself.
        guard size <= configuration.maximumBytes, configuration.maximumEntries > 0 else {
            _ = state.withLock { $0.remove(key) }
            return
        }
        state.withLock { state in
            state.insert(key, entry, size: size, dropAt: min(entry.expiresAt, keepUntil ?? entry.expiresAt))
            while state.index.count > configuration.maximumEntries || state.bytes > configuration.maximumBytes,
                state.oldest >= 0, let victim = state.nodes[state.oldest]?.key
            {
                _ = state.remove(victim)
            }
        }
    }

    public func delete(_ key: CacheKey) async throws { remove(key) }

    /// The synchronous form of ``delete(_:)``.
    public func remove(_ key: CacheKey) { _ = state.withLock { $0.remove(key) } }

    @discardableResult
    public func invalidate(tag: String) async throws -> Int { removeAll(tag: tag) }

    @discardableResult
    public func invalidate(tool: ToolID) async throws -> Int { removeAll(tool: tool) }

    /// The synchronous form of ``invalidate(tag:)``.
    @discardableResult
    public func removeAll(tag: String) -> Int {
        state.withLock { state in
            let keys = state.byTag[tag] ?? []
            return keys.reduce(0) { $0 + (state.remove($1) ? 1 : 0) }
        }
    }

    /// The synchronous form of ``invalidate(tool:)``.
    @discardableResult
    public func removeAll(tool: ToolID) -> Int {
        state.withLock { state in
            let keys = state.byTool[tool] ?? []
            return keys.reduce(0) { $0 + (state.remove($1) ? 1 : 0) }
        }
    }

    public func removeAll() async throws { clear() }

    /// Drops everything (synchronously).
    public func clear() { state.withLock { $0 = State() } }
}
