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
