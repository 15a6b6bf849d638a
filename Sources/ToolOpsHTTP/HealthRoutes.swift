import Hummingbird
import NIOCore
import ToolOpsCore
import ToolOpsHealth

/// The health endpoints, for Kubernetes probes and operators.
///
/// | path | answers |
/// |---|---|
/// | `GET /healthz` | liveness: `200 ok`, always, without running any check |
/// | `GET /readyz` | readiness: `200 ready` / `200 degraded`; `503` when unhealthy or shutting down |
/// | `GET /health` | every check as JSON; `503` when unhealthy |
/// | `GET /health/{check}` | one check as JSON; `503` when it is unhealthy, `404` when unknown |
/// | `GET /health?scope=cluster`, `GET /cluster` | every live replica and its last reported health |
///
/// ```swift
/// let router = Router()
/// HealthRoutes(health: health, membership: registry).register(on: router)
/// ```
public struct HealthRoutes: Sendable {
    public let health: HealthMonitor
    public let membership: (any MembershipStore)?
    /// This replica's id, marked `"self": true` in the cluster view.
    public let replicaID: String?

    public init(health: HealthMonitor, membership: (any MembershipStore)? = nil, replicaID: String? = nil) {
        self.health = health
        self.membership = membership
        self.replicaID = replicaID
    }

    /// Adds the routes to `router` (or a route group).
    public func register<Router: RouterMethods>(on router: Router) {
        router.get("healthz") { _, _ in Self.text(.ok, "ok") }
        router.get("readyz") { _, _ in await readiness() }
        router.get("health") { request, _ in
            if let scope = request.uri.queryParameters.get("scope"), scope == "cluster" { return await cluster() }
            return await detailed()
        }
        router.get("health/:check") { _, context in
            await single(context.parameters.get("check") ?? "")
        }
        router.get("cluster") { _, _ in await cluster() }
    }

    func readiness() async -> Response {
        let readiness = await health.readiness()
        if readiness.isShuttingDown { return Self.text(.serviceUnavailable, "not ready: shutting down") }
        guard readiness.isReady else { return Self.text(.serviceUnavailable, "not ready: \(readiness.status)") }
        return Self.text(.ok, readiness.status == .healthy ? "ready" : "ready: \(readiness.status)")
    }

    func detailed() async -> Response {
        let report = await health.report()
        var checks: [String: JSONValue] = [:]
        for entry in report.checks { checks[entry.name] = Self.json(entry) }
        let body: JSONValue = [
            "status": .string(report.status.rawValue), "timestamp": .string(report.timestamp.rfc3339),
            "shuttingDown": .bool(health.isShuttingDown), "checks": .object(checks),
        ]
        return Self.json(report.status == .unhealthy ? .serviceUnavailable : .ok, body)
    }

    func single(_ name: String) async -> Response {
        guard let entry = await health.check(name) else {
            return Self.json(.notFound, ["error": .string("no health check named \"\(name)\""), "checks": .array(health.checkNames.map { .string($0) })])
        }
        var body = Self.json(entry)
        body = body.merging(["name": .string(name)])
        return Self.json(entry.result.status == .unhealthy ? .serviceUnavailable : .ok, body)
    }

    func cluster() async -> Response {
        guard let membership else {
            return Self.json(.notFound, ["error": "this server has no replica registry"])
        }
        let replicas: [ReplicaInfo]
        do {
            replicas = try await membership.members()
        } catch {
            return Self.json(.serviceUnavailable, ["error": .string("replica registry unavailable: \(error)")])
        }
        let statuses = replicas.map(\.health)
        // The cluster serves while any replica is healthy or degraded.
        let status: HealthStatus =
            statuses.isEmpty || statuses.allSatisfy({ $0 == .unhealthy }) ? .unhealthy : statuses.allSatisfy({ $0 == .healthy }) ? .healthy : .degraded
        let list: [JSONValue] = replicas.map { replica in
            [
                "id": .string(replica.id), "host": .string(replica.host), "port": .integer(Int64(replica.port)),
                "version": .string(replica.version), "health": .string(replica.health.rawValue),
                "checks": .object(replica.checks.mapValues { .string($0.rawValue) }),
                "startedAt": .string(replica.startedAt.rfc3339), "reportedAt": .string(replica.reportedAt.rfc3339),
                "self": .bool(replica.id == replicaID),
            ]
        }
        var counts: [String: JSONValue] = [:]
        for value in HealthStatus.allCases { counts[value.rawValue] = .integer(Int64(statuses.filter { $0 == value }.count)) }
        return Self.json(
            .ok,
            [
                "status": .string(status.rawValue), "timestamp": .string(WallClock().now.rfc3339), "replicas": .array(list),
                "count": .integer(Int64(replicas.count)), "byStatus": .object(counts),
            ])
    }

    static func json(_ entry: HealthReportEntry) -> JSONValue {
        let result = entry.result
        var object: [String: JSONValue] = [
            "status": .string(result.status.rawValue), "critical": .bool(entry.critical),
            "durationMs": .number((result.duration.millisecondsDouble * 1000).rounded() / 1000),
            "timestamp": .string(result.timestamp.rfc3339),
        ]
        if let message = result.message { object["message"] = .string(message) }
        if !result.details.isEmpty { object["details"] = .object(result.details) }
        if let error = result.error { object["error"] = .string(error) }
        return .object(object)
    }

    static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(
            status: status, headers: [.contentType: "text/plain; charset=utf-8", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body + "\n")))
    }

    static func json(_ status: HTTPResponse.Status, _ body: JSONValue) -> Response {
        // Health values are strings, integers and rounded finite numbers; a non-finite one
        // (a custom check's detail) is reported instead of failing the probe.
        let bytes = (try? body.canonicalEncoding()) ?? Array(#"{"error":"health result could not be encoded as JSON"}"#.utf8)
        return Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

extension JSONValue {
    func merging(_ other: [String: JSONValue]) -> JSONValue {
        guard case .object(var object) = self else { return self }
        for (key, value) in other { object[key] = value }
        return .object(object)
    }
}
