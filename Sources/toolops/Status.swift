import ArgumentParser
import Foundation
import ToolOpsCore
import ToolOpsHealth
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsServer

/// `toolops status`: the cluster at a glance, from Redis — live replicas (version, uptime,
/// health), breakers that are not closed, the busiest rate-limit buckets, the cache's size, call
/// totals per tool, and degraded stores — as a table or as JSON.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the cluster: replicas, breakers, busiest limits, cache, calls, degraded stores.")

    @OptionGroup var target: RedisOptions

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        let (client, keys, _) = try target.connect()
        defer { client.shutdown() }
        let status = try await ClusterStatus.read(client: client, keys: keys)
        if json {
            print(try status.json.canonicalString())
        } else {
            print(Self.table(status))
        }
    }

    static func table(_ status: ClusterStatus) -> String {
        var lines: [String] = []
        func section(_ title: String, _ header: [String], _ rows: [[String]]) {
            lines.append("")
            lines.append(title)
            guard !rows.isEmpty else {
                lines.append("  (none)")
                return
            }
            let all = [header] + rows
            let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
            for row in all {
                lines.append("  " + row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
            }
        }
        let now = status.readAt.nanoseconds
        section(
            "REPLICAS (\(status.replicas.count))", ["ID", "ADDRESS", "VERSION", "UPTIME", "HEALTH"],
            status.replicas.map { replica in
                let seconds = max(0, (now - replica.startedAt.nanoseconds) / 1_000_000_000)
                return [replica.id, "\(replica.host):\(replica.port)", replica.version, uptime(seconds), replica.health.rawValue]
            })
        section("BREAKERS NOT CLOSED", ["NAME", "STATE"], status.breakers.map { [$0.name, $0.state] })
        section(
            "BUSIEST RATE LIMITS", ["BUCKET", "BACKLOG"],
            status.busiestLimits.filter { $0.backlog > .zero }.map { [$0.key, "\($0.backlog.nanosecondsClamped / 1_000_000) ms"] })
        section(
            "CACHE", ["ENTRIES", "MEMORY"],
            [["\(status.cacheEntries)\(status.partial ? "+" : "")", "\(status.cacheBytes / 1024) KiB"]])
        section(
            "CALLS (since each replica started)", ["TOOL", "CALLS", "ERRORS", "CACHED"],
            status.tools.keys.sorted().map { tool in
                let outcomes = status.tools[tool] ?? [:]
                let total = outcomes.values.reduce(0, +)
                let errors = outcomes.filter { $0.key != "ok" && $0.key != "cached" }.values.reduce(0, +)
                return [tool, "\(total)", "\(errors)", "\(outcomes["cached"] ?? 0)"]
            })
        section(
            "DEGRADED", ["REPLICA", "CHECK", "STATUS"],
            status.degraded.keys.sorted().flatMap { replica in
                (status.degraded[replica] ?? [:]).sorted { $0.key < $1.key }.map { [replica, $0.key, $0.value] }
            })
        return lines.dropFirst().joined(separator: "\n")
    }

    static func uptime(_ seconds: Int64) -> String {
        if seconds < 120 { return "\(seconds)s" }
        if seconds < 7200 { return "\(seconds / 60)m" }
        return "\(seconds / 3600)h\(seconds % 3600 / 60)m"
    }
}
