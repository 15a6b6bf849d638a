import Synchronization
import ToolOpsCore

/// Running totals of calls per tool and outcome on this replica, for dashboards and
/// `toolops status` (Prometheus has the same numbers as series; this is what a replica can
/// hand over as one small JSON object). Tools are the bounded metric labels, so it stays small.
///
/// Pass it as ``Observability/Configuration/statistics``.
public final class ToolStatistics: Sendable {
    private let counts = Mutex<[String: [String: Int64]]>([:])

    public init() {}

    func record(label: String, outcome: ToolOutcome) {
        counts.withLock { $0[label, default: [:]][outcome.rawValue, default: 0] += 1 }
    }

    /// Tool label → outcome → calls since start.
    public func snapshot() -> [String: [String: Int64]] { counts.withLock { $0 } }

    /// The snapshot as JSON (`{"demo:echo": {"ok": 12, "rate_limited": 3}}`).
    public func json() -> JSONValue {
        .object(snapshot().mapValues { outcomes in .object(outcomes.mapValues(JSONValue.integer)) })
    }

    /// Sums of several replicas' snapshots (JSON as from ``json()``; anything else is skipped).
    public static func sum(_ snapshots: [JSONValue]) -> [String: [String: Int64]] {
        var total: [String: [String: Int64]] = [:]
        for snapshot in snapshots {
            guard case .object(let tools) = snapshot else { continue }
            for (tool, outcomes) in tools {
                guard case .object(let byOutcome) = outcomes else { continue }
                for (outcome, count) in byOutcome {
                    if let count = count.int64Value, count >= 0 { total[tool, default: [:]][outcome, default: 0] &+= count }
                }
            }
        }
        return total
    }
}
