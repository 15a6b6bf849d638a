import Logging
import ToolOpsCore

/// One authentication or authorization decision, for the audit trail. Holds no credential.
public struct AuditEntry: Sendable, Hashable {
    public var allowed: Bool
    /// The principal, when the caller was authenticated.
    public var principal: String?
    public var tenant: String?
    public var method: Identity.Method?
    public var tool: ToolID
    public var action: String
    /// Why: the authorizer's reason, or the authentication failure.
    public var reason: String
    public var callID: String
    /// The trace the call belongs to (W3C trace id), when it is traced.
    public var traceID: String?
    /// Wall-clock time of the decision.
    public var at: ClockInstant

    public init(
        allowed: Bool, principal: String?, tenant: String?, method: Identity.Method?, tool: ToolID, action: String, reason: String,
        callID: String, traceID: String? = nil, at: ClockInstant
    ) {
        self.traceID = traceID
        self.allowed = allowed
        self.principal = principal
        self.tenant = tenant
        self.method = method
        self.tool = tool
        self.action = action
        self.reason = reason
        self.callID = callID
        self.at = at
    }
}

/// Where decisions go. Called in the call's task (so a log line carries its trace ids); keep it quick.
public protocol AuditSink: Sendable {
    func record(_ entry: AuditEntry)
}

/// Sends every entry to each of several sinks (the log and the cluster's stream, say).
public struct MultiAuditSink: AuditSink {
    public let sinks: [any AuditSink]
    public init(_ sinks: [any AuditSink]) { self.sinks = sinks }
    public func record(_ entry: AuditEntry) { for sink in sinks { sink.record(entry) } }
}

/// Audit entries as log lines (`toolops.audit`): allowed at `info`, refused at `warning`.
public struct LogAuditSink: AuditSink {
    public let logger: Logger

    public init(logger: Logger = Logger(label: "toolops.audit")) {
        self.logger = logger
    }

    public func record(_ entry: AuditEntry) {
        var metadata: Logger.Metadata = [
            "decision": .string(entry.allowed ? "allow" : "deny"),
            "tool": .string(entry.tool.description),
            "action": .string(entry.action),
            "reason": .string(entry.reason),
            "call_id": .string(entry.callID),
        ]
        if let principal = entry.principal { metadata["principal"] = .string(principal) }
        if let tenant = entry.tenant { metadata["tenant"] = .string(tenant) }
        if let method = entry.method { metadata["method"] = .string(method.rawValue) }
        logger.log(level: entry.allowed ? .info : .warning, "audit", metadata: metadata)
    }
}
