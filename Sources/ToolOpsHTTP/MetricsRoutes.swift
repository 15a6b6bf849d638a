import Hummingbird
import NIOCore
import Prometheus

/// `GET /metrics`: the Prometheus text exposition (format 0.0.4) of a registry.
///
/// ```swift
/// let telemetry = try Telemetry.make(.init())   // ToolOpsTelemetry: its registry feeds MetricsSystem
/// MetricsRoutes(registry: telemetry.registry).register(on: router)
/// ```
public struct MetricsRoutes: Sendable {
    public let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// Adds the route to `router` (or a route group).
    public func register<Router: RouterMethods>(on router: Router) {
        router.get("metrics") { _, _ in exposition() }
    }

    func exposition() -> Response {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16 * 1024)
        registry.emit(into: &bytes)
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
