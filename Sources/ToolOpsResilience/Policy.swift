import ToolOpsCore

/// Whether a policy acts on its decisions.
public struct PolicyMode: Hashable, Sendable, CustomStringConvertible {
    let shadow: Bool
    /// Decide and act: reject, wait, cancel, retry. The default.
    public static let enforce = PolicyMode(shadow: false)
    /// Decide and report through the observer, but never block, delay, retry or cancel a
    /// call — for rolling out a new limit or breaker safely.
    public static let shadow = PolicyMode(shadow: true)
    public var isShadow: Bool { shadow }
    public var description: String { shadow ? "shadow" : "enforce" }
}

/// Something a resilience policy decided, for metrics and logs.
public enum ResilienceEvent: Sendable {
    /// A rate limit refused (or, in shadow mode, would have refused) a call.
    case rateLimited(tool: ToolID, key: String, decision: RateLimitDecision, shadow: Bool)
    /// A call waited for a reserved rate-limit slot.
    case rateLimitWaited(tool: ToolID, key: String, wait: Duration)
    /// A breaker changed state.
    case circuitStateChanged(key: String, from: CircuitState, to: CircuitState)
    /// A breaker refused (or in shadow mode would have refused) a call.
    case circuitRejected(tool: ToolID, key: String, retryAfter: Duration, shadow: Bool)
    /// A bulkhead had no slot (in shadow mode the call ran anyway).
    case bulkheadRejected(tool: ToolID, key: String, shadow: Bool)
    /// A retry is about to sleep `delay` before attempt `attempt` (in shadow mode: would have retried).
    case retrying(tool: ToolID, attempt: Int, delay: Duration, error: any Error, shadow: Bool)
    /// The retry budget refused a retry.
    case retryBudgetExhausted(tool: ToolID)
    /// A call exceeded its timeout (in shadow mode it was left to finish).
    case timedOut(tool: ToolID, after: Duration, shadow: Bool)
    /// A shared store (Redis) failed; the named policy now runs in its degraded mode.
    case storeDegraded(store: String, error: any Error)
    /// The shared store answered again; the policy is back on it.
    case storeRecovered(store: String)
}

/// Receives ``ResilienceEvent``s. Called outside any lock; keep it quick.
public typealias ResilienceObserver = @Sendable (ResilienceEvent) -> Void

/// How a policy derives its key from a call.
public struct PolicyKey: Sendable, CustomStringConvertible {
    let kind: String
    let extract: @Sendable (ToolCall) -> String
    /// The key is a function of the tool id alone (built-in keys only), so it can be cached per tool.
    var dependsOnlyOnTool = false

    init(kind: String, dependsOnlyOnTool: Bool = false, extract: @escaping @Sendable (ToolCall) -> String) {
        self.kind = kind
        self.extract = extract
        self.dependsOnlyOnTool = dependsOnlyOnTool
    }

    /// One key per tool (`ns:name`).
    public static let tool = PolicyKey(kind: "tool", dependsOnlyOnTool: true) { $0.tool.description }
    /// One key per namespace.
    public static let namespace = PolicyKey(kind: "namespace", dependsOnlyOnTool: true) { $0.tool.namespace }
    /// One key per identity (`anonymous` when there is none).
    public static let identity = PolicyKey(kind: "identity") { $0.identity ?? "anonymous" }
    /// One key per tenant (`-` when there is none).
    public static let tenant = PolicyKey(kind: "tenant") { $0.tenant ?? "-" }
    /// One key per tenant and tool.
    public static let tenantAndTool = PolicyKey(kind: "tenant-tool") { "\($0.tenant ?? "-")/\($0.tool)" }
    /// One key for everything.
    public static let global = PolicyKey(kind: "global", dependsOnlyOnTool: true) { _ in "*" }
    /// A key of your own; `name` tells such keys apart.
    public static func custom(_ name: String, _ extract: @escaping @Sendable (ToolCall) -> String) -> PolicyKey {
        PolicyKey(kind: name, extract: extract)
    }

    public func key(for call: ToolCall) -> String { extract(call) }
    public var description: String { kind }
}

func requireConfiguration(_ condition: Bool, _ message: @autoclosure () -> String) throws(ToolOpsError) {
    if !condition { throw ToolOpsError(.invalidConfiguration, message()) }
}
