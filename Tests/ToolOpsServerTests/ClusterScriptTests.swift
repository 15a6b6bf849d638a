import Foundation
import Synchronization
import Testing
import ToolOpsCore
import ToolOpsTestSupport
import ToolOpsTesting

#if canImport(Glibc)
import Glibc
#endif

/// `scripts/cluster.sh` (what `make cluster` runs): redis-server, three replicas, a real HAProxy
/// and a real Prometheus as local processes.
@Suite("The local cluster behind HAProxy", .timeLimit(.minutes(2)))
struct ClusterScriptTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A base port whose 31 successors are free, below Linux's ephemeral range (32768–60999):
    /// there, any outgoing connection of another test may take a replica's port between this
    /// check and the replica's bind ("Address already in use" made this test fail once in CI).
    func freeBase() throws -> Int {
        for _ in 0..<50 {
            let base = Int.random(in: 200..<320) * 100
            if (0...30).allSatisfy({ Self.isFree(base + $0) }) { return base }
        }
        throw TestFailure("no free port range")
    }

    /// Nothing listens on 127.0.0.1:`port`.
    static func isFree(_ port: Int) -> Bool { !RedisServer.canConnect(port: port) }

    @Test func theLoadBalancerSharesOneLimitAndCacheAndLosesNoRequestWhenAReplicaStops() async throws {
        let binary = try #require(toolopsBinary(), "the toolops executable must be built next to the tests")
        let base = try freeBase()
        let directory = NSTemporaryDirectory() + "toolops-cluster-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let outputPath = directory + "/script.out"
        let script = try SpawnedProcess(
            "/bin/bash", [Self.repository.appendingPathComponent("scripts/cluster.sh").path],
            environment: ProcessInfo.processInfo.environment.merging(["BASE_PORT": "\(base)", "TOOLOPS_BIN": binary, "CLUSTER_DIR": directory]) { $1 },
            outputPath: outputPath)
        let printed = Mutex("")
        @Sendable func readOutput() -> String {
            let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
            printed.withLock { $0 = text }
            return text
        }
        var stoppedScript = false
        defer {
            // On an early exit: stop the cluster and do not wait (its processes end on SIGTERM).
            if !stoppedScript { script.signal(SIGTERM) }
        }
        try #require(await waitFor(seconds: 60) { readOutput().contains("ToolOps cluster up") } != nil, "\(printed.withLock { $0 })")
        let lb = base
        let replicas = [base + 11, base + 12, base + 13]

        // One limit for the cluster (100/s, burst 100 per tool), whichever replica HAProxy picks.
        let started = ContinuousClock.now
        var allowed = 0
        var limited = 0
        for _ in 0..<160 {
            let status = try await http(port: lb, "POST", "/v1/tools/demo/echo", body: "{}").status
            if status == 200 { allowed += 1 } else if status == 429 { limited += 1 }
        }
        let seconds = Double((ContinuousClock.now - started).components.seconds) + Double((ContinuousClock.now - started).components.attoseconds) / 1e18
        #expect(allowed + limited == 160)
        #expect(Double(allowed) <= 100 + 100 * seconds + 1, "\(allowed) allowed in \(seconds) s")
        #expect(limited > 0 || seconds > 0.6, "160 calls in \(seconds) s must hit the shared limit")

        // Computed once, then served from the cache through every replica.
        let first = try await http(port: lb, "POST", "/v1/tools/demo/compute", body: #"{"n":123457}"#)
        let computedBy = try JSONValue(parsing: first.body)["computedBy"]
        for port in replicas {
            let again = try await http(port: port, "POST", "/v1/tools/demo/compute", body: #"{"n":123457}"#)
            #expect(try JSONValue(parsing: again.body)["computedBy"] == computedBy)
        }

        // Prometheus scrapes all three.
        let prometheus = base + 30
        let scraped = await waitFor(seconds: 30) {
            let query = "/api/v1/query?query=count(up%7Bjob%3D%22toolops%22%7D%3D%3D1)"
            guard let response = try? await http(port: prometheus, "GET", query), let json = try? JSONValue(parsing: response.body),
                case .array(let results)? = json["data"]?["result"], case .array(let value)? = results.first?["value"]
            else { return false }
            return value.last == "3"
        }
        #expect(scraped != nil, "Prometheus sees three targets up")

        // SIGTERM on replica 3 while traffic flows through HAProxy: it leaves the cluster and the
        // load balancer stops sending to it — no request fails.
        let pidText = try run("/usr/bin/pgrep", ["-f", "replica-id replica-3"]).split(separator: "\n").first ?? ""
        let pid = try #require(Int32(pidText.trimmingCharacters(in: .whitespaces)))
        var failures: [Int] = []
        var sent = 0
        let stopAt = ContinuousClock.now + .seconds(6)
        var signalled = false
        while ContinuousClock.now < stopAt {
            if !signalled, ContinuousClock.now > stopAt - .seconds(5) {
                kill(pid, SIGTERM)
                signalled = true
            }
            let status = try await http(port: lb, "POST", "/v1/tools/demo/counter", body: "{}").status
            sent += 1
            if status != 200 { failures.append(status) }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(failures.isEmpty, "\(failures.count) of \(sent) requests failed: \(failures)")
        let cluster = try JSONValue(parsing: try await http(port: replicas[0], "GET", "/cluster").body)
        #expect(cluster["count"] == 2)
        let stats = try await http(port: base + 1, "GET", "/stats;csv").body
        #expect(stats.split(separator: "\n").contains { $0.hasPrefix("replicas,replica-3,") && $0.contains("DOWN") }, "\(stats)")

        // Ctrl-C (SIGTERM) stops everything the script started.
        script.signal(SIGTERM)
        _ = await script.wait()
        stoppedScript = true
        let stopped = await waitFor(seconds: 10) { Self.isFree(lb) && replicas.allSatisfy(Self.isFree) && Self.isFree(base + 20) && Self.isFree(prometheus) }
        #expect(stopped != nil, "every process of the cluster is gone")
        try? FileManager.default.removeItem(atPath: directory)
    }
}
