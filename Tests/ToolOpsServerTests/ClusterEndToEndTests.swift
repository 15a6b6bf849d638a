import Foundation
import Synchronization
import Testing
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsTestSupport
import ToolOpsTesting

#if canImport(Glibc)
import Glibc
#endif

/// Three `toolops serve` processes on one real Redis, driven over HTTP: what the cluster
/// promises its users.
@Suite("A three-replica cluster end to end", .timeLimit(.minutes(2)))
struct ClusterEndToEndTests {
    static let configuration = """
        {
          "replica": { "heartbeatInterval": "200ms", "registrationTTL": "1s" },
          "state": { "backend": "redis", "redis": { "url": "REDIS_URL",
                     "degraded": { "rateLimit": "local", "cache": "failOpen", "circuitBreaker": "local", "bulkhead": "local" } } },
          "log": { "level": "error" },
          "policies": {
            "rateLimit": { "rules": [ { "tools": "demo:echo", "rate": 20, "per": "1s", "burst": 20 } ] },
            "cache": { "tools": ["demo:compute"], "ttl": "60s" },
            "circuitBreaker": { "failureRate": 0.5, "minimumCalls": 3, "window": "10s", "openDuration": "30s" },
            "timeout": "5s"
          }
        }
        """

    struct Cluster {
        let ports: [Int]
        let processes: [Process]
        func post(_ replica: Int, _ tool: String, _ body: String = "{}") async throws -> (status: Int, headers: [String: String], body: String) {
            try await http(port: ports[replica], "POST", "/v1/tools/\(tool.replacingOccurrences(of: ":", with: "/"))", body: body)
        }
    }

    func withCluster(_ body: (RedisServer, Cluster) async throws -> Void) async throws {
        let binary = try #require(toolopsBinary(), "the toolops executable must be built next to the tests")
        try await withRedisServer { server in
            let file = NSTemporaryDirectory() + "toolops-e2e-\(UUID().uuidString).json"
            try Self.configuration.replacingOccurrences(of: "REDIS_URL", with: server.url).write(toFile: file, atomically: true, encoding: .utf8)
            let ports = try (0..<3).map { _ in try RedisServer.freePort() }
            let processes = try ports.enumerated().map { index, port in
                let process = Process()
                process.executableURL = URL(fileURLWithPath: binary)
                process.arguments = ["serve", "--config", file, "--port", "\(port)", "--replica-id", "replica-\(index)"]
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
                return process
            }
            defer { processes.forEach { if $0.isRunning { kill($0.processIdentifier, SIGKILL) } } }
            for port in ports {
                let up = await waitFor(seconds: 20) {
                    guard let cluster = try? await http(port: port, "GET", "/cluster") else { return false }
                    return (try? JSONValue(parsing: cluster.body))?["count"] == 3
                }
                try #require(up != nil, "replica on \(port) sees the three replicas")
            }
            try await body(server, Cluster(ports: ports, processes: processes))
        }
    }

    @Test func theReplicasShareLimitsCacheAndBreakersAndDegradeAsDeclared() async throws {
        try await withCluster { server, cluster in
            // A limit of 20/s (burst 20) holds for the cluster, counted over all replicas.
            let started = ContinuousClock.now
            var allowed = 0
            var refused: [(status: Int, headers: [String: String], body: String)] = []
            for index in 0..<60 {
                let response = try await cluster.post(index % 3, "demo:echo")
                if response.status == 200 { allowed += 1 } else { refused.append(response) }
            }
            let elapsed = Double((ContinuousClock.now - started).components.attoseconds) / 1e18 + Double((ContinuousClock.now - started).components.seconds)
            #expect(allowed >= 20)
            #expect(Double(allowed) <= 20 + 20 * elapsed + 1, "\(allowed) allowed in \(elapsed) s")
            #expect(!refused.isEmpty && refused.allSatisfy { $0.status == 429 && $0.headers["ratelimit-limit"] == "20" && $0.headers["retry-after"] != nil })

            // A result computed through replica 0 is a hit on 1 and 2.
            let first = try await cluster.post(0, "demo:compute", #"{"n":300000}"#)
            #expect(first.status == 200)
            #expect(try JSONValue(parsing: first.body)["computedBy"] == "replica-0")
            for replica in [1, 2] {
                let hit = try await cluster.post(replica, "demo:compute", #"{"n":300000}"#)
                #expect(hit.headers["x-toolops-cache"] == "hit")
                #expect(try JSONValue(parsing: hit.body)["computedBy"] == "replica-0")
            }

            // A breaker tripped through replica 0 refuses on 1 and 2 within 100 ms.
            // (Outcomes reach Redis in batches every 20 ms, so replica 0 itself refuses a moment later.)
            for _ in 0..<3 { #expect(try await cluster.post(0, "demo:flaky", #"{"fail":true}"#).status == 502) }
            #expect(await waitFor(seconds: 2) { (try? await cluster.post(0, "demo:flaky"))?.status == 503 } != nil)
            let tripped = ContinuousClock.now
            for replica in [1, 2] {
                let refused = try await cluster.post(replica, "demo:flaky")
                #expect(refused.status == 503 && errorCode(refused.body) == "circuit_open", "replica \(replica): \(refused.status)")
            }
            // Both asked (one HTTP round trip each) and refused within 100 ms of the first refusal.
            #expect(ContinuousClock.now - tripped < .milliseconds(100))

            // `toolops status` lists the three replicas, the open breaker, the traffic per tool.
            let binary = try #require(toolopsBinary())
            let published = await waitFor(seconds: 5) {
                let json = (try? run(binary, ["status", "--redis", server.url, "--json"])).flatMap { try? JSONValue(parsing: $0) }
                return json?["tools"]?["demo:compute"]?["cached"] == 2
            }
            #expect(published != nil, "every replica's statistics reach Redis")
            let status = try JSONValue(parsing: try run(binary, ["status", "--redis", server.url, "--json"]))
            guard case .array(let replicas)? = status["replicas"], case .array(let breakers)? = status["breakers"] else {
                throw TestFailure("unexpected status \(status)")
            }
            #expect(replicas.compactMap { $0["id"]?.stringValue } == ["replica-0", "replica-1", "replica-2"])
            #expect(breakers.contains { $0["name"]?.stringValue?.contains("demo:flaky") == true && $0["state"] == "open" })
            #expect(status["cache"]?["entries"] == 1)
            #expect((status["tools"]?["demo:echo"]?["ok"]?.int64Value ?? 0) >= 20)
            let table = try run(binary, ["status", "--redis", server.url])
            #expect(table.contains("REPLICAS (3)") && table.contains("replica-1") && table.contains("demo:flaky"), "\(table)")

            // The dashboard, in a real headless browser, on another replica: the three replicas and
            // the breaker tripped through replica 0, without a console error.
            let page = try Browser.render("http://127.0.0.1:\(cluster.ports[1])/dashboard")
            #expect(page.consoleMessages.isEmpty, "\(page.consoleMessages)")
            #expect(page.dom.contains("data-ready=\"1\""), "the page rendered its data")
            let replicaRows = page.section(between: "id=\"replicas\"", and: "</tbody>")
            #expect(["replica-0", "replica-1", "replica-2"].allSatisfy(replicaRows.contains), "\(replicaRows)")
            let breakerRows = page.section(between: "id=\"breakers\"", and: "</tbody>")
            #expect(breakerRows.contains("demo:flaky") && breakerRows.contains(">open<"), "\(breakerRows)")
            #expect(page.section(between: "id=\"tools\"", and: "</tbody>").contains("demo:compute"))

            // Redis killed: each policy's declared degraded mode, and no 5xx beyond it.
            server.kill()
            for replica in 0..<3 {
                #expect(try await cluster.post(replica, "demo:echo").status == 200)  // rate limit: local buckets
                #expect(try await cluster.post(replica, "demo:compute", #"{"n":1000}"#).status == 200)  // cache: fail-open
                #expect(try await cluster.post(replica, "demo:counter").status == 200)
            }
            let health = try JSONValue(parsing: try await http(port: cluster.ports[0], "GET", "/health").body)
            #expect(health["status"] == "degraded", "\(health)")
            #expect(try await http(port: cluster.ports[0], "GET", "/readyz").status == 200)  // degraded is still ready

            // Redis back: back on Redis (the limiter's buckets are written there again).
            try server.start()
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let back = await waitFor(seconds: 10) {
                _ = try? await cluster.post(1, "demo:echo")
                let keys = (try? await client.send("KEYS", "toolops:rl:*"))?.array ?? []
                return !keys.isEmpty
            }
            #expect(back != nil, "the rate limiter uses Redis again")
            let healthy = await waitFor(seconds: 10) {
                (try? JSONValue(parsing: try await http(port: cluster.ports[0], "GET", "/health").body))?["checks"]?["redis"]?["status"] == "healthy"
            }
            #expect(healthy != nil)

            // SIGTERM on replica 2: it leaves the cluster at once and exits cleanly.
            kill(cluster.processes[2].processIdentifier, SIGTERM)
            let left = await waitFor(seconds: 5) {
                (try? JSONValue(parsing: try await http(port: cluster.ports[0], "GET", "/cluster").body))?["count"] == 2
            }
            #expect(left != nil)
            cluster.processes[2].waitUntilExit()
            #expect(cluster.processes[2].terminationStatus == 0)
            #expect(try await cluster.post(0, "demo:counter").status == 200)
        }
    }
}

/// Runs `binary` with `arguments` and returns its standard output (throws on a non-zero exit).
func run(_ binary: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw TestFailure("\(arguments) exited with \(process.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

/// A headless chromium (Debian's package) loading a page, running its scripts (for up to 4 s of
/// virtual time, network waits included) and dumping the resulting DOM; console messages —
/// errors and uncaught exceptions included — come from its log.
struct Browser {
    let dom: String
    let consoleMessages: [String]

    static func render(_ url: String) throws -> Browser {
        let binary = try #require(["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) },
            "chromium must be installed (make test installs it)")
        let profile = NSTemporaryDirectory() + "toolops-chromium-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--user-data-dir=\(profile)",
            "--virtual-time-budget=4000", "--enable-logging=stderr", "--v=0", "--dump-dom", url,
        ]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Read both pipes while it runs (a full pipe would stall it).
        let errorData = Mutex(Data())
        let reader = Thread { errorData.withLock { $0 = errors.fileHandleForReading.readDataToEndOfFile() } }
        reader.start()
        let dom = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        while reader.isExecuting { usleep(1000) }
        let log = String(decoding: errorData.withLock { $0 }, as: UTF8.self)
        return Browser(dom: dom, consoleMessages: log.split(separator: "\n").filter { $0.contains(":CONSOLE") }.map(String.init))
    }

    /// The text between the first `start` and the next `end` after it.
    func section(between start: String, and end: String) -> String {
        guard let from = dom.range(of: start), let to = dom.range(of: end, range: from.upperBound..<dom.endIndex) else { return "" }
        return String(dom[from.upperBound..<to.lowerBound])
    }
}

@Suite("The headless browser check")
struct BrowserCheckTests {
    /// The console check above is only worth something if it sees errors: here is one.
    @Test func aScriptErrorIsSeenInTheConsole() throws {
        let page = try Browser.render("data:text/html,<body><script>console.error('broken on purpose');undefinedFunction();</script></body>")
        #expect(page.consoleMessages.contains { $0.contains("broken on purpose") })
        #expect(page.consoleMessages.contains { $0.contains("undefinedFunction") })
    }
}
