
/// The health of one check, or of the whole replica. Ordered: worse is greater.
public enum HealthStatus: String, Sendable, Hashable, Comparable, CaseIterable, CustomStringConvertible {
    case healthy
    case degraded
    case unhealthy

    var rank: Int {
        switch self {
        case .healthy: 0
        case .degraded: 1
        case .unhealthy: 2
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rank < rhs.rank }
    public var description: String { rawValue }
}

/// What a check found.
///
/// A check fills in ``status``, ``message``, ``details`` and ``error``; the ``HealthMonitor``
/// sets ``duration`` and ``timestamp`` when it runs the check.
public struct HealthCheckResult: Sendable, Hashable {
    public var status: HealthStatus
    public var message: String?
    /// Structured facts (latency, usage, open circuits …), rendered as JSON by the HTTP layer.
    public var details: [String: JSONValue]
    /// The error text when the check failed or threw.
    public var error: String?
    /// How long the check took (zero for a result served from the check's cache interval).
    public var duration: Duration
    /// When the check ran: wall-clock nanoseconds since 1970 (see ``WallClock``).
    public var timestamp: ClockInstant

    public init(
        status: HealthStatus, message: String? = nil, details: [String: JSONValue] = [:], error: String? = nil,
        duration: Duration = .zero, timestamp: ClockInstant = ClockInstant(nanoseconds: 0)
    ) {
        self.status = status
        self.message = message
        self.details = details
        self.error = error
        self.duration = duration
        self.timestamp = timestamp
    }

    public static func healthy(_ message: String? = nil, details: [String: JSONValue] = [:]) -> Self {
        Self(status: .healthy, message: message, details: details)
    }

    public static func degraded(_ message: String, details: [String: JSONValue] = [:], error: String? = nil) -> Self {
        Self(status: .degraded, message: message, details: details, error: error)
    }

    public static func unhealthy(_ message: String, details: [String: JSONValue] = [:], error: String? = nil) -> Self {
        Self(status: .unhealthy, message: message, details: details, error: error)
    }
}

/// One health check. Checks must honour task cancellation: a check that outlives its
/// timeout is cancelled, and the monitor waits for it to return (nothing keeps running).
public protocol HealthCheck: Sendable {
    func check() async throws -> HealthCheckResult
}

/// A check from a closure. A closure that throws makes the check unhealthy.
public struct FunctionHealthCheck: HealthCheck {
    let body: @Sendable () async throws -> HealthCheckResult

    public init(_ body: @escaping @Sendable () async throws -> HealthCheckResult) { self.body = body }

    /// A check that is healthy when `body` returns and unhealthy when it throws.
    public init(succeeding body: @escaping @Sendable () async throws -> Void) {
        self.body = {
            try await body()
            return .healthy()
        }
    }

    public func check() async throws -> HealthCheckResult { try await body() }
}
