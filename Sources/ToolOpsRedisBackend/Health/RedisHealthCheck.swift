import ToolOpsCore
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsResilience

/// Redis as a health check: a `PING` round trip, and `degraded` while any of the given
/// fallback stores runs on its degraded mode.
///
/// When Redis does not answer the check reports ``Configuration/unreachableStatus``: by
/// default `degraded` if fallback stores were given (the replica still serves, on its local
/// fallback or fail-open; every replica is in the same position, so taking them all out of the
/// load balancer would only turn a partial outage into a full one) and `unhealthy` if not.
public struct RedisHealthCheck: HealthCheck {
    public struct Configuration: Sendable, Hashable {
        /// Status when `PING` fails. `nil` (default): `degraded` with fallbacks, else `unhealthy`.
        public var unreachableStatus: HealthStatus?
        /// A `PING` slower than this is reported `degraded`. Default 250 ms.
        public var slowThreshold: Duration

        public init(unreachableStatus: HealthStatus? = nil, slowThreshold: Duration = .milliseconds(250)) {
            self.unreachableStatus = unreachableStatus
            self.slowThreshold = slowThreshold
        }
    }

    public let client: RedisClient
    public let fallbacks: FallbackStoresHealthCheck
    public let configuration: Configuration
    let clock: any ToolOpsClock

    public init(client: RedisClient, fallbacks: [any FallbackStore] = [], configuration: Configuration = .init(), clock: any ToolOpsClock = SystemClock()) {
        self.init(client: client, fallbacks: FallbackStoresHealthCheck(fallbacks), configuration: configuration, clock: clock)
    }

    /// With the fallback stores of `fallbacks` (e.g. every one a ``RedisBackend`` made).
    public init(client: RedisClient, fallbacks: FallbackStoresHealthCheck, configuration: Configuration = .init(), clock: any ToolOpsClock = SystemClock()) {
        self.client = client
        self.fallbacks = fallbacks
        self.configuration = configuration
        self.clock = clock
    }

    public func check() async throws -> HealthCheckResult {
        let stores = fallbacks.stores
        var degraded = FallbackStoresHealthCheck.degraded(stores)
        var details = degraded.isEmpty ? [:] : ["fallback": JSONValue.object(degraded)]
        let started = clock.now
        do {
            try await client.send("PING")
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as RedisClientError where error.code == .tlsVerificationFailed {
            // Not an outage to ride out on fallbacks: the configuration is wrong, or the
            // connection is being intercepted.
            return HealthCheckResult(
                status: .unhealthy, message: "Redis TLS certificate verification failed", details: details, error: error.message)
        } catch {
            let status = configuration.unreachableStatus ?? (stores.isEmpty ? .unhealthy : .degraded)
            return HealthCheckResult(status: status, message: "Redis did not answer PING", details: details, error: "\(error)")
        }
        let latency = clock.now - started
        details["pingMs"] = .number((latency.millisecondsDouble * 1000).rounded() / 1000)
        degraded = FallbackStoresHealthCheck.degraded(stores)
        if !degraded.isEmpty {
            return .degraded("Redis answers; stores still on fallback until their next probe", details: details)
        }
        if latency > configuration.slowThreshold {
            return .degraded("Redis answered PING slowly", details: details)
        }
        return .healthy("PONG", details: details)
    }
}
