import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real local Sentinel setup for tests: a master, one replica, and three sentinels (quorum 2,
/// `down-after-milliseconds` 1000) monitoring it as `mymaster`. Takes ~5 s to be ready (the
/// sentinels discover each other through hello messages every 2 s). Stopped by
/// ``withRedisSentinel(_:)``.
///
/// ```swift
/// try await withRedisSentinel { group in
///     let client = try RedisClient(url: group.url)   // redis-sentinel://127.0.0.1:s1,…/mymaster
///     group.master.kill()                             // the replica is promoted in ~2 s
/// }
/// ```
///
/// `@unchecked Sendable`: the sentinels' `Process` handles are set in `init` and then only
/// touched by ``stop()`` under `lock`; everything else is immutable.
public final class RedisSentinelGroup: @unchecked Sendable {
    public static let masterName = "mymaster"
    /// The server that is master at the start.
    public let master: RedisServer
    /// Its replica at the start.
    public let replica: RedisServer
    /// The sentinels' ports.
    public let sentinelPorts: [Int]
    private let sentinels: [Process]
    private let directory: URL
    private let lock = NSLock()

    /// `redis-sentinel://127.0.0.1:<s1>,…/mymaster`.
    public var url: String {
        "redis-sentinel://" + sentinelPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",") + "/\(Self.masterName)"
    }

    public init() throws {
        let master = try RedisServer()
        var replica: RedisServer? = nil
        var processes: [Process] = []
        var ports: [Int] = []
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("toolops-sentinel-\(UUID().uuidString.prefix(8))")
        do {
            replica = try RedisServer(options: .init(extraArguments: ["--replicaof", "127.0.0.1", "\(master.port)"]))
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for index in 0..<3 {
                let port = try RedisServer.freePort()
                let file = directory.appendingPathComponent("sentinel-\(index).conf")
                let configuration = """
                    port \(port)
                    bind 127.0.0.1
                    dir \(directory.path)
                    logfile \(directory.appendingPathComponent("sentinel-\(index).log").path)
                    sentinel monitor \(Self.masterName) 127.0.0.1 \(master.port) 2
                    sentinel down-after-milliseconds \(Self.masterName) 1000
                    sentinel failover-timeout \(Self.masterName) 3000
                    sentinel parallel-syncs \(Self.masterName) 1

                    """
                try configuration.write(to: file, atomically: true, encoding: .utf8)
                let process = Process()
                process.executableURL = URL(fileURLWithPath: RedisServer.redisServerPath)
                process.arguments = [file.path, "--sentinel"]
                process.standardInput = FileHandle.nullDevice
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
                processes.append(process)
                ports.append(port)
            }
        } catch {
            for process in processes { Self.kill(process) }
            replica?.stop()
            master.stop()
            throw error
        }
        self.master = master
        // Never nil here: set before the first statement that can fail after it.
        self.replica = replica ?? master
        self.sentinels = processes
        self.sentinelPorts = ports
        self.directory = directory
        do {
            try waitUntilReady()
        } catch {
            stop()
            throw error
        }
    }

    /// Waits until the replica is linked and every sentinel knows the other two and the replica.
    private func waitUntilReady(within: TimeInterval = 30) throws {
        let deadline = Date().addingTimeInterval(within)
        func value(_ lines: [Substring], after name: String) -> String? {
            guard let index = lines.firstIndex(where: { $0 == name }), index + 1 < lines.count else { return nil }
            return String(lines[index + 1])
        }
        while Date() < deadline {
            let linked = ((try? RedisClusterServers.redisCLI(["-p", "\(replica.port)", "INFO", "replication"])) ?? "")
                .contains("master_link_status:up")
            let ready = sentinelPorts.allSatisfy { port in
                let lines = ((try? RedisClusterServers.redisCLI(["-p", "\(port)", "SENTINEL", "MASTER", Self.masterName])) ?? "")
                    .split(separator: "\n")
                return value(lines, after: "num-other-sentinels") == "2" && value(lines, after: "num-slaves") == "1"
            }
            if linked && ready { return }
            usleep(100_000)
        }
        throw RedisServerError("the sentinels did not get ready")
    }

    /// The master's port as the first sentinel reports it now.
    public func reportedMasterPort() throws -> Int? {
        let lines = try RedisClusterServers.redisCLI(["-p", "\(sentinelPorts[0])", "SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self.masterName])
            .split(separator: "\n")
        return lines.count == 2 ? Int(lines[1]) : nil
    }

    public func stop() {
        lock.withLock { for process in sentinels { Self.kill(process) } }
        replica.stop()
        master.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }

    private static func kill(_ process: Process) {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// Runs `body` with a fresh master, replica and three sentinels, always stopping them afterwards.
public func withRedisSentinel<T>(_ body: (RedisSentinelGroup) async throws -> T) async throws -> T {
    let group = try RedisSentinelGroup()
    defer { group.stop() }
    return try await body(group)
}
