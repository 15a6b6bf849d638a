import ToolOpsCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Memory use against the limit that actually kills the process.
///
/// In a container that is the cgroup's limit: cgroup v2 `memory.max` (usage = `memory.current`
/// minus `inactive_file`, the "working set" the kubelet evicts on), else cgroup v1
/// `memory.limit_in_bytes`. Without a cgroup limit it is the host's `MemTotal` against this
/// process's resident set. (The Go original compared the heap with `runtime.Sys`, memory the
/// process had already obtained, so the ratio said nothing about the limit.)
public struct MemoryHealthCheck: HealthCheck {
    public struct Configuration: Sendable, Hashable {
        /// `degraded` at or above this fraction of the limit. Default 0.8.
        public var warningThreshold: Double
        /// `unhealthy` at or above this fraction. Default 0.95.
        public var criticalThreshold: Double
        /// A limit of your own (bytes), instead of the cgroup's or host's.
        public var limitBytes: Int?
        /// Where the cgroup file system is mounted. Default `/sys/fs/cgroup`.
        public var cgroupRoot: String
        /// Where procfs is mounted. Default `/proc`.
        public var procRoot: String

        public init(
            warningThreshold: Double = 0.8, criticalThreshold: Double = 0.95, limitBytes: Int? = nil,
            cgroupRoot: String = "/sys/fs/cgroup", procRoot: String = "/proc"
        ) {
            self.warningThreshold = warningThreshold
            self.criticalThreshold = criticalThreshold
            self.limitBytes = limitBytes
            self.cgroupRoot = cgroupRoot
            self.procRoot = procRoot
        }
    }

    /// One reading: bytes in use, the limit, and where they came from.
    public struct Usage: Sendable, Hashable {
        public var usedBytes: Int
        public var limitBytes: Int
        /// `cgroup-v2`, `cgroup-v1` or `host`.
        public var source: String
        public var ratio: Double { limitBytes > 0 ? Double(usedBytes) / Double(limitBytes) : 0 }
    }

    public let configuration: Configuration

    public init(_ configuration: Configuration = .init()) throws(ToolOpsError) {
        let (warning, critical) = (configuration.warningThreshold, configuration.criticalThreshold)
        guard warning > 0, warning <= critical, critical <= 1 else {
            throw ToolOpsError(
                .invalidConfiguration, "memory thresholds need 0 < warning (\(warning)) ≤ critical (\(critical)) ≤ 1")
        }
        if let limit = configuration.limitBytes, limit <= 0 {
            throw ToolOpsError(.invalidConfiguration, "limitBytes must be positive")
        }
        self.configuration = configuration
    }

    public func check() async throws -> HealthCheckResult {
        guard let usage = usage() else { return .degraded("memory usage could not be read") }
        let percent = (usage.ratio * 1000).rounded() / 10
        let details: [String: JSONValue] = [
            "usedBytes": .integer(Int64(usage.usedBytes)), "limitBytes": .integer(Int64(usage.limitBytes)),
            "ratio": .number((usage.ratio * 10_000).rounded() / 10_000), "source": .string(usage.source),
        ]
        let message = "\(percent)% of \(usage.limitBytes / (1024 * 1024)) MiB (\(usage.source))"
        if usage.ratio >= configuration.criticalThreshold { return .unhealthy(message, details: details) }
        if usage.ratio >= configuration.warningThreshold { return .degraded(message, details: details) }
        return .healthy(message, details: details)
    }

    /// The current reading, or `nil` when neither a cgroup nor procfs could be read.
    public func usage() -> Usage? {
        let root = configuration.cgroupRoot
        if let limit = number(at: "\(root)/memory.max"), let current = number(at: "\(root)/memory.current") {
            return make(used: current - statValue("inactive_file", in: "\(root)/memory.stat"), limit: limit, source: "cgroup-v2")
        }
        // v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages); treat ≥ 2^60 as none.
        if let limit = number(at: "\(root)/memory/memory.limit_in_bytes"), limit < 1 << 60,
            let current = number(at: "\(root)/memory/memory.usage_in_bytes")
        {
            let inactive = statValue("total_inactive_file", in: "\(root)/memory/memory.stat")
            return make(used: current - inactive, limit: limit, source: "cgroup-v1")
        }
        guard let total = meminfoTotal(), let resident = residentBytes() else {
            if let limit = configuration.limitBytes, let resident = residentBytes() {
                return make(used: resident, limit: limit, source: "host")
            }
            return nil
        }
        return make(used: resident, limit: total, source: "host")
    }

    func make(used: Int, limit: Int, source: String) -> Usage {
        Usage(usedBytes: max(0, used), limitBytes: configuration.limitBytes ?? limit, source: source)
    }

    /// A file holding one integer (`max` — no limit — reads as `nil`).
    func number(at path: String) -> Int? {
        guard let bytes = FileIO.read(path, limit: 64) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self).trimmingWhitespace
        return Int(text)
    }

    func statValue(_ key: String, in path: String) -> Int {
        guard let bytes = FileIO.read(path, limit: 64 * 1024) else { return 0 }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2, fields[0] == key { return Int(fields[1]) ?? 0 }
        }
        return 0
    }

    func meminfoTotal() -> Int? {
        guard let bytes = FileIO.read("\(configuration.procRoot)/meminfo", limit: 64 * 1024) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kib = Int(fields[1]) { return kib * 1024 }
        }
        return nil
    }

    /// Resident pages × page size from `statm` (second field).
    func residentBytes() -> Int? {
        guard let bytes = FileIO.read("\(configuration.procRoot)/self/statm", limit: 1024) else { return nil }
        let fields = String(decoding: bytes, as: UTF8.self).split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

extension String {
    var trimmingWhitespace: String {
        var view = Substring(self)
        while let first = view.first, first.isWhitespace { view.removeFirst() }
        while let last = view.last, last.isWhitespace { view.removeLast() }
        return String(view)
    }
}
