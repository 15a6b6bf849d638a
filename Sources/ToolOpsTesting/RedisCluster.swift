import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real local Redis Cluster for tests: `masters` cluster-enabled redis-servers on free
/// loopback ports (each with its own cluster-bus port), optionally `replicasPerMaster`
/// replicas each, joined with `redis-cli --cluster create` (slots spread evenly over the
/// masters). Stopped by ``withRedisCluster(masters:replicasPerMaster:extraArguments:_:)``.
///
/// ```swift
/// try await withRedisCluster(masters: 3) { cluster in
///     let client = try RedisClient(url: cluster.url)   // redis-cluster://127.0.0.1:p1,…
///     …
///     cluster.server(port: p)?.kill()                   // a master dies; its replica takes over
/// }
/// ```
public final class RedisClusterServers: Sendable {
    /// Every node; the first `masters` were created masters (failovers change that later:
    /// ask the nodes, e.g. ``masterPorts()``).
    public let servers: [RedisServer]
    private let configFiles: [String]

    /// `redis-cluster://127.0.0.1:<port>,…` with every node as a seed.
    public var url: String { "redis-cluster://" + servers.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") }

    public init(masters: Int = 3, replicasPerMaster: Int = 0, nodeTimeout: Duration = .seconds(1), extraArguments: [String] = []) throws {
        precondition(masters >= 1 && (masters >= 3 || replicasPerMaster == 0), "1 or 2 masters without replicas, or 3+")
        var servers: [RedisServer] = []
        var files: [String] = []
        let milliseconds = nodeTimeout.components.seconds * 1000 + nodeTimeout.components.attoseconds / 1_000_000_000_000_000
        for _ in 0..<(masters * (1 + replicasPerMaster)) {
            let file = NSTemporaryDirectory() + "toolops-nodes-\(UUID().uuidString).conf"
            files.append(file)
            servers.append(
                try RedisServer(
                    options: .init(
                        extraArguments: [
                            "--cluster-enabled", "yes", "--cluster-config-file", file, "--cluster-port", "\(try RedisServer.freePort())",
                            "--cluster-node-timeout", "\(milliseconds)",
                        ] + extraArguments)))
        }
        self.servers = servers
        self.configFiles = files
        do {
            if masters >= 3 {
                _ = try Self.redisCLI(
                    ["--cluster", "create"] + servers.map { "127.0.0.1:\($0.port)" }
                        + ["--cluster-replicas", "\(replicasPerMaster)", "--cluster-yes"])
            } else {
                // redis-cli refuses fewer than 3 masters: share the slots by hand.
                let share = 16_384 / masters
                for (index, server) in servers.prefix(masters).enumerated() {
                    let last = index == masters - 1 ? 16_383 : (index + 1) * share - 1
                    _ = try Self.redisCLI(["-p", "\(server.port)", "CLUSTER", "ADDSLOTSRANGE", "\(index * share)", "\(last)"])
                    if index > 0 { _ = try Self.redisCLI(["-p", "\(server.port)", "CLUSTER", "MEET", "127.0.0.1", "\(servers[0].port)"]) }
                }
            }
            try waitUntilHealthy(replicas: masters * replicasPerMaster)
        } catch {
            stop()
            throw error
        }
    }

    /// Waits until every node running says `cluster_state:ok` and, when `replicas` > 0, that
    /// many replicas are linked to their masters.
    public func waitUntilHealthy(replicas: Int = 0, within: TimeInterval = 30) throws {
        let deadline = Date().addingTimeInterval(within)
        while Date() < deadline {
            let running = servers.filter { RedisServer.canConnect(port: $0.port) }
            let ok = running.allSatisfy { ((try? Self.redisCLI(["-p", "\($0.port)", "CLUSTER", "INFO"])) ?? "").contains("cluster_state:ok") }
            let linked = running.filter {
                ((try? Self.redisCLI(["-p", "\($0.port)", "INFO", "replication"])) ?? "").contains("master_link_status:up")
            }.count
            if ok && linked >= replicas { return }
            usleep(50_000)
        }
        throw RedisServerError("the cluster did not become healthy")
    }

    /// The ports of the nodes that are masters now and serve slots.
    public func masterPorts() throws -> [Int] {
        try servers.filter { RedisServer.canConnect(port: $0.port) }.compactMap { server in
            let role = try Self.redisCLI(["-p", "\(server.port)", "ROLE"])
            return role.hasPrefix("master") ? server.port : nil
        }
    }

    /// The port of the master serving `key`'s slot, as the first running node sees it (`CLUSTER NODES`).
    public func masterPort(forKey key: String) throws -> Int? {
        guard let server = servers.first(where: { RedisServer.canConnect(port: $0.port) }) else { return nil }
        let slotText = try Self.redisCLI(["-p", "\(server.port)", "CLUSTER", "KEYSLOT", key])
        guard let slot = Int(slotText.trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
        // <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges…>
        for line in try Self.redisCLI(["-p", "\(server.port)", "CLUSTER", "NODES"]).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 8, fields[2].contains("master"), !fields[2].contains("fail") else { continue }
            let serves = fields[8...].contains { range in
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                return bounds.count == 2 ? (bounds[0]...bounds[1]).contains(slot) : bounds == [slot]
            }
            if serves, let address = fields[1].split(separator: "@").first, let port = address.split(separator: ":").last {
                return Int(port)
            }
        }
        return nil
    }

    /// The node listening on `port`.
    public func server(port: Int) -> RedisServer? { servers.first { $0.port == port } }

    /// `FLUSHALL` and `SCRIPT FLUSH` on every master (between tests sharing a cluster).
    public func flushAll() throws {
        for port in try masterPorts() {
            _ = try Self.redisCLI(["-p", "\(port)", "FLUSHALL"])
        }
    }

    public func stop() {
        for server in servers { server.stop() }
        for file in configFiles { try? FileManager.default.removeItem(atPath: file) }
    }

    deinit { stop() }

    /// Runs `redis-cli` with `arguments` (loopback), returning its output; throws on failure.
    @discardableResult
    public static func redisCLI(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: redisCLIPath)
        process.arguments = ["-h", "127.0.0.1"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else { throw RedisServerError("redis-cli \(arguments.joined(separator: " ")) failed: \(text)") }
        return text
    }

    public static let redisCLIPath: String = {
        for candidate in ["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return "redis-cli"
    }()
}

/// Runs `body` with a fresh local Redis Cluster, always stopping it afterwards.
public func withRedisCluster<T>(
    masters: Int = 3, replicasPerMaster: Int = 0, nodeTimeout: Duration = .seconds(1), extraArguments: [String] = [],
    _ body: (RedisClusterServers) async throws -> T
) async throws -> T {
    let cluster = try RedisClusterServers(
        masters: masters, replicasPerMaster: replicasPerMaster, nodeTimeout: nodeTimeout, extraArguments: extraArguments)
    defer { cluster.stop() }
    return try await body(cluster)
}
