import Hummingbird
import HTTPTypes
import NIOCore
import Synchronization
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsHealth
import ToolOpsObserve
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience

/// The cluster dashboard, served by every replica: `GET /dashboard` (one static page) and
/// `GET /dashboard/data` (its JSON: ``ClusterStatus``, read from Redis at most once a second
/// per replica; without Redis, this replica's own view).
public final class DashboardRoutes: Sendable {
    let assembly: ToolOpsAssembly
    let replicaID: String
    private let cached = Mutex<(status: ClusterStatus, at: ContinuousClock.Instant)?>(nil)

    public init(assembly: ToolOpsAssembly, replicaID: String) {
        self.assembly = assembly
        self.replicaID = replicaID
    }

    public func register<Router: RouterMethods>(on router: Router) {
        router.get("dashboard") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [
                    .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                    .contentSecurityPolicy: "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                ],
                body: ResponseBody(byteBuffer: ByteBuffer(string: DashboardPage.html)))
        }
        router.get("dashboard/data") { [self] _, _ -> Response in
            do {
                let status = try await status()
                return Response(
                    status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: try status.json.canonicalEncoding())))
            } catch {
                return HTTPErrorMapping.Mapped(
                    status: .serviceUnavailable, code: "status_unavailable", message: "the cluster status cannot be read now", headers: [:],
                    retryAfter: .seconds(1)
                ).response(callID: nil)
            }
        }
    }

    func status() async throws -> ClusterStatus {
        if let cached = cached.withLock({ $0 }), ContinuousClock.now - cached.at < .seconds(1) { return cached.status }
        let status: ClusterStatus
        if let backend = assembly.backend {
            // Polled every couple of seconds by every open dashboard: a lighter scan than `toolops status`.
            var limits = ClusterStatus.Limits()
            limits.maximumScannedKeys = 2_000
            status = try await ClusterStatus.read(client: backend.client, keys: backend.keys, limits: limits)
        } else {
            status = try await localStatus()
        }
        cached.withLock { $0 = (status, .now) }
        return status
    }

    /// Without Redis: this replica is the cluster.
    func localStatus() async throws -> ClusterStatus {
        let replicas = try await assembly.membership.members()
        var breakers: [ClusterStatus.Breaker] = []
        if let check = assembly.breakers, let result = try? await check.check() {
            for (name, state) in result.details { breakers.append(.init(name: name, state: state.stringValue ?? "open")) }
        }
        return ClusterStatus(
            replicas: replicas, breakers: breakers.sorted { $0.name < $1.name }, busiestLimits: [], cacheEntries: 0, cacheBytes: 0, partial: false,
            tools: assembly.statistics.snapshot(), degraded: ClusterStatus.degraded(replicas), readAt: WallClock().now)
    }
}
