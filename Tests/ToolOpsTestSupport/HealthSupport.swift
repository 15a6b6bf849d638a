import Synchronization
import ToolOpsCore
import ToolOpsHealth

/// A check whose answer the test sets.
public final class SwitchCheck: HealthCheck {
    private let value: Mutex<HealthCheckResult>
    public let runs = Counter()
    public init(_ result: HealthCheckResult = .healthy("fine")) { value = Mutex(result) }
    public func set(_ result: HealthCheckResult) { value.withLock { $0 = result } }
    public func check() async throws -> HealthCheckResult {
        runs.increment()
        return value.withLock { $0 }
    }
}

public func replica(_ id: String, port: Int = 8080) throws -> ReplicaInfo {
    try ReplicaInfo(id: id, host: "10.0.0.1", port: port, version: "1.2.3", startedAt: ClockInstant(nanoseconds: 1_700_000_000_000_000_000))
}

public func temporaryDirectory(_ name: String) -> String {
    "/tmp/toolops-health-tests-\(name)-\(UInt64.random(in: 0...UInt64.max))"
}
