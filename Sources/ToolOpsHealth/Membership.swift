import Synchronization
import ToolOpsCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One replica as it announces itself to the registry.
public struct ReplicaInfo: Sendable, Hashable {
    /// Unique per replica: 1–128 characters of `a-z A-Z 0-9 . _ -`, not starting with `.`
    /// (a pod name is a good id).
    public let id: String
    public var host: String
    public var port: Int
    public var version: String
    /// Wall-clock start time (nanoseconds since 1970).
    public var startedAt: ClockInstant
    /// The replica's overall health at its last heartbeat.
    public var health: HealthStatus
    /// Checks that were not healthy at the last heartbeat, with their status.
    public var checks: [String: HealthStatus]
    /// Wall-clock time of the last heartbeat.
    public var reportedAt: ClockInstant

    public init(
        id: String, host: String, port: Int, version: String, startedAt: ClockInstant = WallClock().now,
        health: HealthStatus = .healthy, checks: [String: HealthStatus] = [:], reportedAt: ClockInstant? = nil
    ) throws(ToolOpsError) {
        try Self.validateID(id)
        guard (0...65_535).contains(port) else { throw ToolOpsError(.invalidInput, "port \(port) is outside 0–65535") }
        self.id = id
        self.host = host
        self.port = port
        self.version = version
        self.startedAt = startedAt
        self.health = health
        self.checks = checks
        self.reportedAt = reportedAt ?? startedAt
    }

    public static func validateID(_ id: String) throws(ToolOpsError) {
        let bytes = id.utf8
        guard !bytes.isEmpty, bytes.count <= 128, bytes.first != UInt8(ascii: "."),
            bytes.allSatisfy({ $0.isASCIIAlphanumeric || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") })
        else {
            throw ToolOpsError(.invalidInput, "replica id \"\(id)\" must be 1–128 characters of a-z A-Z 0-9 . _ - (not starting with .)")
        }
    }

    /// A JSON object (the registry stores replicas as canonical JSON).
    public var json: JSONValue {
        .object([
            "id": .string(id), "host": .string(host), "port": .integer(Int64(port)), "version": .string(version),
            "startedAt": .integer(startedAt.nanoseconds), "health": .string(health.rawValue),
            "checks": .object(checks.mapValues { .string($0.rawValue) }), "reportedAt": .integer(reportedAt.nanoseconds),
        ])
    }

    /// Reads ``json``; anything missing or of the wrong type is an `invalidInput` error.
    public init(json: JSONValue) throws(ToolOpsError) {
        func field(_ name: String) throws(ToolOpsError) -> JSONValue {
            guard let value = json[name] else { throw ToolOpsError(.invalidInput, "replica record lacks \"\(name)\"") }
            return value
        }
        guard let id = try field("id").stringValue, let host = try field("host").stringValue,
            let port = try field("port").int64Value, let version = try field("version").stringValue,
            let started = try field("startedAt").int64Value, let reported = try field("reportedAt").int64Value,
            let healthText = try field("health").stringValue, let health = HealthStatus(rawValue: healthText),
            case .object(let checkObject) = try field("checks"), let port = Int(exactly: port)
        else { throw ToolOpsError(.invalidInput, "replica record has a field of the wrong type") }
        var checks: [String: HealthStatus] = [:]
        for (name, value) in checkObject {
            guard let text = value.stringValue, let status = HealthStatus(rawValue: text) else {
                throw ToolOpsError(.invalidInput, "replica record has an unknown status for check \(name)")
            }
            checks[name] = status
        }
        try self.init(
            id: id, host: host, port: port, version: version, startedAt: ClockInstant(nanoseconds: started),
            health: health, checks: checks, reportedAt: ClockInstant(nanoseconds: reported))
    }

    /// The canonical JSON bytes of ``json``.
    public func encoded() -> [UInt8] {
        // Only finite numbers and strings go in, so canonical encoding cannot fail.
        (try? json.canonicalEncoding()) ?? Array("{}".utf8)
    }

    public init(decoding bytes: [UInt8]) throws(ToolOpsError) {
        try self.init(json: try JSONValue(parsing: bytes, limits: .init(maximumDepth: 4, maximumBytes: 64 * 1024)))
    }
}

/// The registry of live replicas. A registration lasts `ttl`; replicas refresh it with
/// heartbeats (``MembershipHeartbeat``), so one that dies without deregistering disappears
/// within its TTL.
public protocol MembershipStore: Sendable {
    /// Adds or refreshes `replica` (replacing what it reported before) for `ttl`.
    func register(_ replica: ReplicaInfo, ttl: Duration) async throws
    /// Removes a replica at once (graceful shutdown). Removing an unknown id is not an error.
    func deregister(id: String) async throws
    /// The replicas whose registration has not expired, sorted by id.
    func members() async throws -> [ReplicaInfo]
}

/// Membership within one process (tests, single-replica deployments).
public final class MemoryMembershipStore: MembershipStore {
    let clock: any ToolOpsClock
    let entries = Mutex([String: (replica: ReplicaInfo, expires: ClockInstant)]())

    public init(clock: any ToolOpsClock = SystemClock()) { self.clock = clock }

    public func register(_ replica: ReplicaInfo, ttl: Duration) async throws {
        try requireTTL(ttl)
        let expires = clock.now + ttl
        entries.withLock { $0[replica.id] = (replica, expires) }
    }

    public func deregister(id: String) async throws {
        _ = entries.withLock { $0.removeValue(forKey: id) }
    }

    public func members() async throws -> [ReplicaInfo] {
        let now = clock.now
        return entries.withLock { entries in
            entries = entries.filter { $0.value.expires > now }
            return entries.values.map(\.replica).sorted { $0.id < $1.id }
        }
    }
}

/// Membership shared by the processes of one host: one file per replica in a directory,
/// holding the replica and its expiry in wall-clock time. Files are replaced atomically; an
/// expired, corrupt or truncated file is ignored and removed.
public final class FileMembershipStore: MembershipStore {
    public let directory: String
    let clock: any ToolOpsClock

    /// - Parameter clock: a wall clock shared by the processes (default ``WallClock``).
    public init(directory: String, clock: any ToolOpsClock = WallClock()) throws(ToolOpsError) {
        try FileIO.makeDirectories(directory)
        self.directory = directory
        self.clock = clock
    }

    func path(_ id: String) -> String { "\(directory)/\(id).replica" }

    public func register(_ replica: ReplicaInfo, ttl: Duration) async throws {
        try requireTTL(ttl)
        let record: JSONValue = ["expiresAt": .integer((clock.now + ttl).nanoseconds), "replica": replica.json]
        try FileIO.writeAtomically(path(replica.id), try record.canonicalEncoding())
    }

    public func deregister(id: String) async throws {
        try ReplicaInfo.validateID(id)
        _ = unlink(path(id))
    }

    public func members() async throws -> [ReplicaInfo] {
        let now = clock.now.nanoseconds
        var replicas: [ReplicaInfo] = []
        for name in FileIO.list(directory) where name.hasSuffix(".replica") {
            let file = "\(directory)/\(name)"
            guard let bytes = FileIO.read(file, limit: 128 * 1024) else { continue }  // removed meanwhile
            guard let record = try? JSONValue(parsing: bytes), let expires = record["expiresAt"]?.int64Value,
                let json = record["replica"], let replica = try? ReplicaInfo(json: json), "\(replica.id).replica" == name
            else {
                removeIfUnchanged(file, bytes)
                continue
            }
            if expires <= now {
                removeIfUnchanged(file, bytes)
            } else {
                replicas.append(replica)
            }
        }
        return replicas.sorted { $0.id < $1.id }
    }

    /// A heartbeat may have rewritten the file since it was read; remove only what was judged.
    func removeIfUnchanged(_ file: String, _ bytes: [UInt8]) {
        if FileIO.read(file, limit: 128 * 1024) == bytes { _ = unlink(file) }
    }
}

func requireTTL(_ ttl: Duration) throws(ToolOpsError) {
    guard ttl >= .milliseconds(1) else { throw ToolOpsError(.invalidInput, "registration ttl must be at least 1 ms") }
}
