import Foundation
import ArgumentParser
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsResilience

/// Helpers that tests run as separate OS processes (not shipped: a test-support executable).
@main
struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "toolops-test-probe", abstract: "Test helpers (not for users).",
        subcommands: [FileRateLimitProbe.self, RedisRateLimitProbe.self, RedisSendProbe.self]
    )
}

/// Spends a file-backed rate limit as fast as possible for a while and prints
/// `allowed start end` (start/end on the host's monotonic clock, in ns).
struct FileRateLimitProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "file-ratelimit")

    @Option var directory: String
    @Option var key: String = "shared"
    @Option var rate: Int
    @Option var burst: Int
    @Option var durationMs: Int = 1000
    /// Start together: spin until this monotonic instant (ns).
    @Option var startAt: Int64 = 0
    /// Pause between attempts (µs), so the probes do not starve the rest of a test run.
    @Option var pauseUs: Int = 0

    func run() async throws {
        let clock = SystemClock()
        let store = try FileRateLimitStore(directory: directory, clock: clock)
        let limit = try RateLimit(rate: rate, per: .seconds(1), burst: burst)
        while clock.now.nanoseconds < startAt { try await Task.sleep(for: .microseconds(200)) }
        let start = clock.now
        let end = start + .milliseconds(durationMs)
        var allowed = 0
        while clock.now < end {
            let decision = try await store.acquire([RateLimitRequest(key: key, limit: limit)], maxWait: .zero)
            if decision[0].allowed { allowed += 1 }
            if pauseUs > 0 { try await Task.sleep(for: .microseconds(pauseUs)) }
        }
        print("\(allowed) \(start.nanoseconds) \(clock.now.nanoseconds)")
    }
}

/// The same against Redis: prints `allowed decisions`.
struct RedisRateLimitProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "redis-ratelimit")

    @Option var url: String
    @Option var key: String = "shared"
    @Option var rate: Int
    @Option var burst: Int
    @Option var durationMs: Int = 1000
    @Option var startAt: Int64 = 0
    @Option var concurrency: Int = 4

    func run() async throws {
        let clock = SystemClock()
        let client = try RedisClient(url: url)
        defer { client.shutdown() }
        let store = RedisRateLimitStore(client: client)
        let limit = try RateLimit(rate: rate, per: .seconds(1), burst: burst)
        _ = try await store.acquire([RateLimitRequest(key: "warm-up", limit: limit)], maxWait: .zero)
        while clock.now.nanoseconds < startAt { try await Task.sleep(for: .microseconds(200)) }
        let end = clock.now + .milliseconds(durationMs)
        let counts = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var allowed = 0
                    var decisions = 0
                    while clock.now < end {
                        decisions += 1
                        if try await store.acquire([RateLimitRequest(key: key, limit: limit)], maxWait: .zero)[0].allowed {
                            allowed += 1
                        } else {
                            // A remembered refusal takes a microsecond: pause rather than spin the machine's cores.
                            try await Task.sleep(for: .milliseconds(1))
                        }
                    }
                    return (allowed, decisions)
                }
            }
            return try await group.reduce((0, 0)) { ($0.0 + $1.0, $0.1 + $1.1) }
        }
        print("\(counts.0) \(counts.1)")
    }
}

/// Sends one command, waits, then pings; prints `first <code or reply>`, `peak <bytes>` (the
/// process's peak resident memory, VmHWM) and `then <code or reply>` — for tests of what a
/// misbehaving server can do to a process.
struct RedisSendProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "redis-send")

    @Option var url: String
    @Option var command: String = "GET"
    @Option var commandTimeoutMs: Int = 3000
    @Option var holdMs: Int = 0

    func run() async throws {
        var configuration = try RedisConfiguration(url: url)
        configuration.clientName = nil
        configuration.poolSize = 1
        configuration.commandTimeout = .milliseconds(commandTimeoutMs)
        let client = try RedisClient(configuration: configuration)
        defer { client.shutdown() }
        func outcome(_ command: RedisCommand) async -> String {
            do { return "\(try await client.send(command))" } catch let error as RedisClientError { return "\(error.code)" } catch {
                return "\(error)"
            }
        }
        let started = ContinuousClock.now
        print("first \(await outcome(RedisCommand(command, "key"))) \((ContinuousClock.now - started).components.seconds)")
        try await Task.sleep(for: .milliseconds(holdMs))
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let peak = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }?.split(separator: " ").dropFirst().first
        print("peak \((Int(peak ?? "0") ?? 0) * 1024)")
        // The connection that streamed is replaced once its deadline passes.
        var then = await outcome(RedisCommand("PING"))
        for _ in 0..<50 where then != "+PONG" {
            try await Task.sleep(for: .milliseconds(100))
            then = await outcome(RedisCommand("PING"))
        }
        print("then \(then)")
    }
}
