import Synchronization
import ToolOpsAuth
import ToolOpsCore
import ToolOpsRedis

/// The cluster's audit trail: every decision appended to one Redis Stream
/// (`<prefix>:audit`, `XADD … MAXLEN ~ <maximumLength>`), whichever replica made it.
///
/// Fields: `at` (RFC 3339), `decision` (`allow`/`deny`), `principal`, `tenant`, `method`,
/// `tool`, `action`, `reason`, `call_id`, `trace_id` — never a credential.
///
/// Appending never makes a call wait: the entry is queued on a connection and its reply is
/// read and dropped. While Redis is unreachable (or the connection's queue is full) the entry
/// is not kept: pair this sink with ``LogAuditSink`` in a ``MultiAuditSink`` so every replica's
/// log holds its own decisions whatever happens to Redis. ``dropped`` counts the losses.
public final class RedisAuditSink: AuditSink {
    let client: RedisClient
    let keys: RedisKeySchema
    /// The stream's approximate length cap. Defaults to 100,000 entries.
    public let maximumLength: Int
    private let losses = Atomic<Int>(0)

    public init(client: RedisClient, keys: RedisKeySchema = .init(), maximumLength: Int = 100_000) {
        self.client = client
        self.keys = keys
        self.maximumLength = max(1, maximumLength)
    }

    public func record(_ entry: AuditEntry) {
        var arguments: [any RedisArgumentConvertible] = [keys.audit, "MAXLEN", "~", maximumLength, "*"]
        func field(_ name: String, _ value: String?) {
            guard let value else { return }
            arguments.append(name)
            arguments.append(value)
        }
        field("at", entry.at.rfc3339)
        field("decision", entry.allowed ? "allow" : "deny")
        field("principal", entry.principal)
        field("tenant", entry.tenant)
        field("method", entry.method?.rawValue)
        field("tool", entry.tool.description)
        field("action", entry.action)
        field("reason", entry.reason)
        field("call_id", entry.callID)
        field("trace_id", entry.traceID)
        if !client.sendUnawaited([RedisCommand("XADD", arguments: arguments)]) { losses.add(1, ordering: .relaxed) }
    }

    /// Entries that could not be queued (Redis unreachable, or its queue full).
    public var dropped: Int { losses.load(ordering: .relaxed) }

    /// The last `count` entries, newest first, as field → value dictionaries (for `toolops audit`).
    public func last(_ count: Int) async throws -> [[String: String]] {
        let reply = try await client.send("XREVRANGE", keys.audit, "+", "-", "COUNT", max(1, count))
        guard case .array(let entries) = reply else { return [] }
        return entries.compactMap { entry in
            guard case .array(let parts) = entry, parts.count == 2, case .array(let fields) = parts[1] else { return nil }
            var record: [String: String] = [:]
            if let id = parts[0].string { record["id"] = id }
            var index = 0
            while index + 1 < fields.count {
                if let name = fields[index].string, let value = fields[index + 1].string { record[name] = value }
                index += 2
            }
            return record
        }
    }
}
