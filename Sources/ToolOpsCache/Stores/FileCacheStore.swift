import Crypto
import Synchronization
import ToolOpsCore
#if canImport(Glibc)
import Glibc
#endif

/// A cache in a directory, shared by the processes of one host and surviving restarts.
///
/// Layout: `<path>/<2 hex>/<sha-256 of the key>.entry` (256 shards). Each entry is written
/// to a temporary file and renamed into place, and carries its lifetimes in its header
/// (``CacheEntryCodec``). A corrupt or truncated entry is a miss and is removed. When the
/// directory grows past ``Configuration/maximumBytes``, expired entries go first, then the
/// least recently written, down to 90 % of the bound. Invalidation by tag or tool reads
/// every entry's header (a directory scan: fine for a host-local cache, not for millions
/// of entries).
public final class FileCacheStore: CacheStore {
    public struct Configuration: Sendable {
        /// Defaults to 1 GiB.
        public var maximumBytes: Int
        /// A store rescans the directory's size after this many of its own writes, to see
        /// other processes' writes. Defaults to 1,000.
        public var rescanEvery: Int
        public init(maximumBytes: Int = 1 << 30, rescanEvery: Int = 1_000) {
            self.maximumBytes = maximumBytes
            self.rescanEvery = rescanEvery
        }
    }

    struct Usage {
        var bytes = 0
        var writesSinceScan = 0
    }

    public let path: String
    public let configuration: Configuration
    let clock: any ToolOpsClock
    private let usage = Mutex(Usage())

    /// - Parameter clock: a wall clock (entries outlive the process). Defaults to ``WallClock``.
    public init(path: String, configuration: Configuration = .init(), clock: any ToolOpsClock = WallClock()) throws(ToolOpsError) {
        guard configuration.maximumBytes > 0, configuration.rescanEvery > 0 else {
            throw ToolOpsError(.invalidConfiguration, "file cache bounds must be positive")
        }
        self.path = path
        self.configuration = configuration
        self.clock = clock
        try FileIO.makeDirectories(path)
        let bytes = scan().reduce(0) { $0 + $1.size }
        usage.withLock { $0.bytes = bytes }
    }

    func file(for key: CacheKey) -> (directory: String, file: String) {
        let name = SHA256.hex(of: key.value)
        let directory = "\(path)/\(name.prefix(2))"
        return (directory, "\(directory)/\(name).entry")
    }

    public func get(_ key: CacheKey) async throws -> CacheEntry? {
        let file = file(for: key).file
        guard let before = FileIO.status(file), let bytes = FileIO.read(file, limit: Int(Int32.max)) else { return nil }
        guard let entry = try? CacheEntryCodec.decode(bytes) else {
            removeIfUnchanged(file, inode: before.inode)
            return nil
        }
        // Expired entries stay until the next eviction: removing them here could race a
        // fresh write by another process.
        return entry.isExpired(at: clock.now) ? nil : entry
    }

    public func set(_ key: CacheKey, _ entry: CacheEntry, encodedValue: [UInt8]?) async throws {
        let bytes = try encodedValue.map { CacheEntryCodec.encode(entry, value: $0) } ?? CacheEntryCodec.encode(entry)
        let (directory, file) = file(for: key)
        let previous = FileIO.status(file)?.size ?? 0
        do {
            try FileIO.writeAtomically(file, bytes)
        } catch {
            // The shard directory may not exist yet (or was removed by hand).
            try FileIO.makeDirectories(directory)
            try FileIO.writeAtomically(file, bytes)
        }
        let needsScan = usage.withLock { usage -> Bool in
            usage.bytes += bytes.count - previous
            usage.writesSinceScan += 1
            return usage.bytes > configuration.maximumBytes || usage.writesSinceScan >= configuration.rescanEvery
        }
        if needsScan { evict() }
    }

    public func delete(_ key: CacheKey) async throws {
        let file = file(for: key).file
        if let size = FileIO.status(file)?.size, unlink(file) == 0 { usage.withLock { $0.bytes -= size } }
    }

    @discardableResult
    public func invalidate(tag: String) async throws -> Int { removeMatching { _, tags in tags.contains(tag) } }

    @discardableResult
    public func invalidate(tool: ToolID) async throws -> Int { removeMatching { entryTool, _ in entryTool == tool.description } }

    public func removeAll() async throws {
        for info in scan() { unlink(info.file) }
        usage.withLock { $0.bytes = 0 }
    }

    /// Bytes on disk as of the last scan plus this process's writes since.
    public var bytes: Int { usage.withLock { $0.bytes } }

    struct FileInfo {
        var file: String
        var size: Int
        var modified: Int64
        var inode: UInt64
    }

    func scan() -> [FileInfo] {
        var files: [FileInfo] = []
        for shard in FileIO.list(path) where shard.utf8.count == 2 {
            for name in FileIO.list("\(path)/\(shard)") {
                let file = "\(path)/\(shard)/\(name)"
                guard let status = FileIO.status(file) else { continue }
                if name.hasSuffix(".tmp") {
                    // A writer that died between write and rename; give live writers a minute.
                    if clock.now.nanoseconds - status.modified > 60_000_000_000 { unlink(file) }
                    continue
                }
                guard name.hasSuffix(".entry") else { continue }
                files.append(FileInfo(file: file, size: status.size, modified: status.modified, inode: status.inode))
            }
        }
        return files
    }

    /// Removes expired and unreadable entries, then the oldest until under 90 % of the bound.
    func evict() {
        var files = scan()
        var total = files.reduce(0) { $0 + $1.size }
        if total > configuration.maximumBytes {
            let now = clock.now
            files.removeAll { info in
                let head = FileIO.read(info.file, limit: 4096).flatMap { try? CacheEntryCodec.lifetimes($0) }
                if let head, head.expiresAt > now { return false }
                if removeIfUnchanged(info.file, inode: info.inode) { total -= info.size }
                return true
            }
            let target = configuration.maximumBytes / 10 * 9
            for info in files.sorted(by: { $0.modified < $1.modified }) where total > target {
                if unlink(info.file) == 0 { total -= info.size }
            }
        }
        usage.withLock {
            $0.bytes = total
            $0.writesSinceScan = 0
        }
    }

    private func removeMatching(_ matches: (String, [String]) -> Bool) -> Int {
        var removed = 0
        for info in scan() {
            guard let bytes = FileIO.read(info.file, limit: Int(Int32.max)) else { continue }
            guard let header = try? CacheEntryCodec.header(bytes) else {
                removeIfUnchanged(info.file, inode: info.inode)
                continue
            }
            if matches(header.tool, header.tags), unlink(info.file) == 0 {
                removed += 1
                usage.withLock { $0.bytes -= info.size }
            }
        }
        return removed
    }

    /// Unlinks `file` unless another writer replaced it since it was read.
    @discardableResult
    private func removeIfUnchanged(_ file: String, inode: UInt64) -> Bool {
        guard FileIO.status(file)?.inode == inode else { return false }
        return unlink(file) == 0
    }
}
