import Synchronization
import ToolOpsCore

/// Running totals of calls per tool and outcome on this replica, for dashboards and
/// `toolops status` (Prometheus has the same numbers as series; this is what a replica can
/// hand over as one small JSON object). Tools are the bounded metric labels, so it stays small.
///
/// Pass it as ``Observability/Configuration/statistics``.
public final class ToolStatistics: Sendable {
    /// One tool's totals, one atomic counter per outcome (in ``ToolOutcome/allCases`` order):
    /// the call path adds to them without a lock.
    final class Counts: Sendable {
        let byOutcome: InlineArray<10, Atomic<Int64>> = InlineArray { _ in Atomic(0) }

        func add(_ outcome: ToolOutcome) {
            let index = outcome.ordinal
            guard index < byOutcome.count else { return }
            byOutcome[index].wrappingAdd(1, ordering: .relaxed)
        }

        /// Outcome name → calls, for outcomes seen at least once.
        func snapshot() -> [String: Int64] {
            var outcomes: [String: Int64] = [:]
            for outcome in ToolOutcome.allCases where outcome.ordinal < byOutcome.count {
                let count = byOutcome[outcome.ordinal].load(ordering: .relaxed)
                if count > 0 { outcomes[outcome.rawValue] = count }
            }
            return outcomes
        }
    }

    private let tools = Mutex<[String: Counts]>([:])

    public init() {}

    /// The totals of the tool labelled `label` (made once; the observe middleware keeps it with
    /// the tool's series).
    func counts(for label: String) -> Counts {
        tools.withLock { tools in
            if let known = tools[label] { return known }
            let made = Counts()
            tools[label] = made
            return made
        }
    }

    /// Tool label → outcome → calls since start.
    public func snapshot() -> [String: [String: Int64]] {
        let tools = tools.withLock { $0 }
        return tools.mapValues { $0.snapshot() }.filter { !$0.value.isEmpty }
    }

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
