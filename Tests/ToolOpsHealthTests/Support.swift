import Synchronization
import ToolOpsCore
import ToolOpsHealth
import ToolOpsTestSupport

/// A check whose answer the test sets.
final class SwitchCheck: HealthCheck {
    private let value: Mutex<HealthCheckResult>
    let runs = Counter()
    init(_ result: HealthCheckResult = .healthy("fine")) { value = Mutex(result) }
    func set(_ result: HealthCheckResult) { value.withLock { $0 = result } }
    func check() async throws -> HealthCheckResult {
        runs.increment()
        return value.withLock { $0 }
    }
}

/// Waits (yielding, then sleeping 1 ms) until `condition` holds, up to about `seconds`.
func eventually(seconds: Double = 5, _ condition: () async -> Bool) async -> Bool {
    for _ in 0..<1_000 {
        if await condition() { return true }
        await Task.yield()
    }
    let rounds = Int(seconds * 1000)
    for _ in 0..<rounds {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(1))
    }
    return await condition()
}

func replica(_ id: String, port: Int = 8080) throws -> ReplicaInfo {
    try ReplicaInfo(id: id, host: "10.0.0.1", port: port, version: "1.2.3", startedAt: ClockInstant(nanoseconds: 1_700_000_000_000_000_000))
}

func temporaryDirectory(_ name: String) -> String {
    "/tmp/toolops-health-tests-\(name)-\(UInt64.random(in: 0...UInt64.max))"
}
