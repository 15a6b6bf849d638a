import Synchronization
import ToolOpsCore
#if canImport(Glibc)
import Glibc
#endif

/// A directory of small state files shared by the processes of one host.
///
/// Each key is a file; a read-modify-write holds an exclusive `flock` on the key's lock file,
/// and the new state replaces the old with an atomic `rename`, so readers never see a torn
/// file and a crash mid-write leaves the previous state. A file that cannot be parsed
/// (corrupt, truncated, from an older format) is treated as empty state and overwritten.
///
/// File operations run on the calling thread; each critical section is one small read and
/// at most one small write on local disk.
///
/// Keys may come from callers (a state file per tenant), so idle state is removed:
/// ``sweep(isIdle:)`` deletes the state file and the lock file of every key whose state can
/// no longer change a decision, each under that key's lock (a lock file is unlinked only by
/// its holder, and a process that then gets the lock on the unlinked file sees that it is no
/// longer the key's lock and takes the new one). The stores sweep every 4,096 updates of a
/// process, or when a minute has passed since the last sweep.
public final class FileStateDirectory: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Keys (state files) at most. A store asked for a new key at the ceiling first sweeps
        /// (at most once a second), then refuses or skips it as its policy says. Defaults to
        /// 100,000.
        public var maximumKeys: Int
        public init(maximumKeys: Int = 100_000) { self.maximumKeys = max(1, maximumKeys) }
    }

    public let path: String
    public let configuration: Configuration
    /// Identifies this boot: monotonic-clock timestamps from another boot are meaningless,
    /// so state written before a reboot is discarded.
    let bootID: String

    public init(path: String, configuration: Configuration = .init()) throws(ToolOpsError) {
        self.path = path
        self.configuration = configuration
        try FileIO.makeDirectories(path)
        bootID = Self.readBootID()
        keys = Mutex((estimate: FileIO.list(path).filter { $0.hasSuffix(".state") }.count, lastCeilingSweep: 0))
    }

    /// Updates since the last sweep, and when it ran (monotonic ns).
    private let sweepSchedule = Mutex((updates: 0, at: Int64(0)))
    /// State files: counted at each sweep, plus those this process created or removed since
    /// (others' are seen at the next sweep); and when the last sweep at the ceiling ran.
    private let keys: Mutex<(estimate: Int, lastCeilingSweep: Int64)>

    /// Whether a new key may get a state file: below the ceiling, or below it after `sweep`
    /// (run at most once a second at the ceiling).
    public func roomForNewKey(sweep: () -> Void) -> Bool {
        let maximum = configuration.maximumKeys
        let now = SystemClock().now.nanoseconds
        let (full, sweepNow) = keys.withLock { keys -> (Bool, Bool) in
            guard keys.estimate >= maximum else { return (false, false) }
            guard now - keys.lastCeilingSweep >= 1_000_000_000 else { return (true, false) }
            keys.lastCeilingSweep = now
            return (true, true)
        }
        guard full else { return true }
        guard sweepNow else { return false }
        sweep()
        return keys.withLock { $0.estimate < maximum }
    }

    static func readBootID() -> String {
        guard let file = fopen("/proc/sys/kernel/random/boot_id", "r") else { return "unknown" }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return "unknown" }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.filter { $0 != "\n" }
    }

    /// A file name for `key`: safe characters kept, others percent-encoded, long keys hashed.
    func fileName(for key: String) -> String {
        var name = ""
        for byte in key.utf8 {
            let safe = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
            if safe { name.append(Character(Unicode.Scalar(byte))) } else {
                name += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        if name.utf8.count > 180 || name.hasPrefix(".") {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
            for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            name = String(name.prefix(120)) + "~" + String(hash, radix: 16)
        }
        return name
    }

    /// Locks the files of `keys` (in sorted order, so concurrent batches cannot deadlock),
    /// hands their current states to `body`, and writes back the states it changed.
    /// A state is a JSON object; `nil` means none (or unreadable).
    public func update<R>(_ keys: [String], _ body: (inout [JSONValue?]) throws -> R) throws -> R {
        let order = Array(Set(keys)).sorted()
        var locks: [Int32] = []
        defer {
            for fd in locks {
                flock(fd, LOCK_UN)
                close(fd)
            }
        }
        for key in order {
            locks.append(try lock("\(path)/\(fileName(for: key)).lock", wait: true) ?? -1)
        }
        let original = keys.map { read(key: $0) }
        var states = original
        let result = try body(&states)
        var created = 0
        for (index, key) in keys.enumerated() where states[index] != original[index] {
            try write(key: key, state: states[index])
            if original[index] == nil { created += 1 } else if states[index] == nil { created -= 1 }
        }
        if created != 0 { self.keys.withLock { $0.estimate = max(0, $0.estimate + created) } }
        return result
    }

    /// Opens and locks `lockPath` — the file linked there *now*: a lock file unlinked by a
    /// sweep while we waited for it no longer guards the key, so we take the new one. Returns
    /// the descriptor, or `nil` when `wait` is false and someone else holds the lock.
    private func lock(_ lockPath: String, wait: Bool) throws(ToolOpsError) -> Int32? {
        while true {
            let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw ToolOpsError(.storeUnavailable, "cannot open \(lockPath): \(String(cString: strerror(errno)))")
            }
            while flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) != 0 {
                if errno == EINTR { continue }
                let code = errno
                close(fd)
                if code == EWOULDBLOCK && !wait { return nil }
                throw ToolOpsError(.storeUnavailable, "flock \(lockPath): \(String(cString: strerror(code)))")
            }
            var held = stat()
            var linked = stat()
            if fstat(fd, &held) == 0, stat(lockPath, &linked) == 0, held.st_ino == linked.st_ino, held.st_dev == linked.st_dev {
                return fd
            }
            flock(fd, LOCK_UN)
            close(fd)
        }
    }

    /// Removes the files of every key whose state `isIdle` says can no longer change a decision
    /// (and of keys whose state is unreadable or from another boot). Keys locked by someone
    /// right now are skipped. Returns how many keys were removed.
    @discardableResult
    public func sweep(isIdle: (JSONValue) -> Bool) -> Int {
        sweepSchedule.withLock { $0 = (0, SystemClock().now.nanoseconds) }
        var removed = 0
        var bases = Set<String>()
        var stateFiles = 0
        for name in FileIO.list(path) {
            if name.hasSuffix(".state") {
                bases.insert(String(name.dropLast(6)))
                stateFiles += 1
            }
            if name.hasSuffix(".lock") { bases.insert(String(name.dropLast(5))) }
        }
        defer { keys.withLock { $0.estimate = max(0, stateFiles - removed) } }
        for base in bases {
            let lockPath = "\(path)/\(base).lock"
            guard let fd = try? lock(lockPath, wait: false) else { continue }
            defer {
                flock(fd, LOCK_UN)
                close(fd)
            }
            let state = readFile("\(path)/\(base).state")
            guard state.map(isIdle) ?? true else { continue }
            if unlink("\(path)/\(base).state") == 0 { removed += 1 }
            unlink(lockPath)  // we hold it: whoever waits for it re-checks and takes a new one
        }
        return removed
    }

    /// Counts an update; `true` when a sweep is due (every 4,096 updates of this process, or a
    /// minute after the last one).
    func sweepDue() -> Bool {
        let now = SystemClock().now.nanoseconds
        return sweepSchedule.withLock { schedule in
            schedule.updates += 1
            if schedule.updates >= 4096 || now - schedule.at >= 60_000_000_000 {
                schedule = (0, now)
                return true
            }
            return false
        }
    }

    /// State files and lock files in the directory now.
    public var fileCount: Int { FileIO.list(path).count }

    private func read(key: String) -> JSONValue? {
        readFile("\(path)/\(fileName(for: key)).state")
    }

    private func readFile(_ file: String) -> JSONValue? {
        guard let bytes = FileIO.read(file, limit: 16 * 1024 * 1024) else { return nil }
        // Unparseable or from another boot: start afresh (the next write repairs the file).
        guard let value = try? JSONValue(parsing: bytes), value["boot"]?.stringValue == bootID else { return nil }
        return value["state"]
    }

    private func write(key: String, state: JSONValue?) throws {
        let file = "\(path)/\(fileName(for: key)).state"
        guard let state else {
            unlink(file)
            return
        }
        let document: JSONValue = .object(["boot": .string(bootID), "state": state])
        try FileIO.writeAtomically(file, try document.canonicalEncoding())
    }
}

extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
