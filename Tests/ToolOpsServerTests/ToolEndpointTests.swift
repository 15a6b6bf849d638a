import Crypto
import Foundation
import Hummingbird
import ServiceContextModule
import Synchronization
import ToolOpsAuth
import ToolOpsHTTP
import ToolOpsRedis
import Tracing
import Logging
import ServiceLifecycle
import Testing
import ToolOpsCore
import ToolOpsResilience
import ToolOpsServer
import ToolOpsTestSupport
import ToolOpsTesting

/// Runs a server in this process on a free port until `body` returns.
func withToolServer(
    _ configure: (inout ToolOpsConfiguration) throws -> Void = { _ in }, _ body: (Int, ToolOpsServer) async throws -> Void
) async throws {
    var configuration = ToolOpsConfiguration()
    configuration.server.port = try RedisServer.freePort()
    configuration.replica.id = "replica-under-test"
    try configure(&configuration)
    let server = try ToolOpsServer(configuration, logger: quietLogger)
    let port = configuration.server.port
    try await withThrowingTaskGroup(of: Void.self) { group in
        let services = ServiceGroup(services: server.services, gracefulShutdownSignals: [], logger: quietLogger)
        group.addTask { try await services.run() }
        guard await waitFor(seconds: 10, { (try? await http(port: port, "GET", "/healthz"))?.status == 200 }) != nil else {
            Issue.record("the server did not start")
            await services.triggerGracefulShutdown()
            return
        }
        do {
            try await body(port, server)
        } catch {
            await services.triggerGracefulShutdown()
            throw error
        }
        await services.triggerGracefulShutdown()
        try await group.waitForAll()
    }
}

func errorCode(_ body: String) -> String? {
    (try? JSONValue(parsing: body))?["error"]?["code"]?.stringValue
}

@Suite("The tool endpoint", .timeLimit(.minutes(1)))
struct ToolEndpointTests {
    @Test func theDemoToolsAnswerAndListTheirSchemas() async throws {
        // On an event-loop group of its own (server.eventLoopThreads), not NIO's shared one.
        try await withToolServer({ $0.server.eventLoopThreads = 1 }) { port, _ in
            let list = try await http(port: port, "GET", "/v1/tools")
            #expect(list.status == 200)
            let tools = try JSONValue(parsing: list.body)["tools"]
            guard case .array(let items)? = tools else { throw TestFailure("no tools in \(list.body)") }
            #expect(items.compactMap { $0["id"]?.stringValue } == ["demo:compute", "demo:counter", "demo:echo", "demo:flaky", "demo:sleep"])
            #expect(items.first?["inputSchema"]?["required"] == ["n"])

            let echo = try await http(port: port, "POST", "/v1/tools/demo/echo", body: #"{"b":[1,2],"a":"x"}"#)
            #expect(echo.status == 200)
            #expect(try JSONValue(parsing: echo.body) == ["a": "x", "b": [1, 2]])
            #expect(echo.headers["x-toolops-call-id"]?.count == 32)
            #expect(echo.headers["content-type"] == "application/json")
            // No body is no arguments.
            #expect(try await http(port: port, "POST", "/v1/tools/demo/echo").body == "{}")
            let compute = try await http(port: port, "POST", "/v1/tools/demo/compute", body: #"{"n":1000}"#)
            #expect(try JSONValue(parsing: compute.body)["primes"] == 168)
        }
    }

    @Test func badInputIsAnsweredWithA4xxNamingTheProblemNeverA500() async throws {
        try await withToolServer({ $0.server.maximumBodyBytes = 4096 }) { port, _ in
            let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
            let cases: [(path: String, body: String?, headers: [String: String], status: Int, code: String, mentions: String)] = [
                ("/v1/tools/demo/echo", "{bad", [:], 400, "invalid_input", "not valid JSON"),
                ("/v1/tools/demo/echo", "[1,2]", [:], 400, "invalid_input", "JSON object"),
                ("/v1/tools/demo/echo", #"{"a":\#(deep)}"#, [:], 400, "invalid_input", "JSON"),
                ("/v1/tools/demo/sleep", #"{"ms":"soon"}"#, [:], 400, "invalid_input", "arguments.ms"),
                ("/v1/tools/demo/sleep", "{}", [:], 400, "invalid_input", "arguments.ms is required"),
                ("/v1/tools/demo/sleep", #"{"ms":99999999}"#, [:], 400, "invalid_input", "above"),
                ("/v1/tools/demo/sleep", #"{"ms":1,"extra":true}"#, [:], 400, "invalid_input", "extra"),
                ("/v1/tools/demo/echo", "{}", ["X-Tenant-ID": String(repeating: "t", count: 200)], 400, "invalid_input", "X-Tenant-ID"),
                ("/v1/tools/demo/nope", "{}", [:], 404, "tool_not_found", "demo:nope"),
                ("/v1/tools/demo/bad%20name", "{}", [:], 404, "tool_not_found", "no such tool"),
                ("/v1/tools/demo/echo", #"{"a":""# + String(repeating: "x", count: 5000) + #""}"#, [:], 413, "payload_too_large", "4096"),
            ]
            for item in cases {
                let response = try await http(port: port, "POST", item.path, headers: item.headers, body: item.body)
                #expect(response.status == item.status, "\(item.path) \(item.body?.prefix(40) ?? "")")
                #expect(errorCode(response.body) == item.code, "\(response.body)")
                #expect(response.body.contains(item.mentions), "\(response.body)")
            }
            // The server is still fine.
            #expect(try await http(port: port, "POST", "/v1/tools/demo/echo", body: "{}").status == 200)
        }
    }

    @Test func refusalsCarryTheStatusAndHeadersClientsActOn() async throws {
        try await withToolServer({ configuration in
            configuration.policies.rateLimitRules = [.init(tools: "demo:echo", rate: 2, per: .seconds(10), burst: 2)]
            configuration.policies.breakerEnabled = true
            configuration.policies.breakerMinimumCalls = 3
            configuration.policies.breakerWindow = .count(10)
            configuration.policies.breakerOpenDuration = .seconds(30)
            configuration.policies.timeout = .milliseconds(200)
        }) { port, _ in
            // Rate limit: 2 per 10 s, then 429 with the IETF draft headers and Retry-After.
            for _ in 0..<2 { #expect(try await http(port: port, "POST", "/v1/tools/demo/echo", body: "{}").status == 200) }
            let limited = try await http(port: port, "POST", "/v1/tools/demo/echo", body: "{}")
            #expect(limited.status == 429)
            #expect(errorCode(limited.body) == "rate_limited")
            #expect(limited.headers["ratelimit-limit"] == "2")
            #expect(limited.headers["ratelimit-remaining"] == "0")
            let retryAfter = Int(limited.headers["retry-after"] ?? "") ?? 0
            #expect((1...5).contains(retryAfter), "Retry-After \(retryAfter)")
            #expect((1...10).contains(Int(limited.headers["ratelimit-reset"] ?? "") ?? 0))

            // Timeout: 504.
            let slow = try await http(port: port, "POST", "/v1/tools/demo/sleep", body: #"{"ms":2000}"#)
            #expect(slow.status == 504)
            #expect(errorCode(slow.body) == "timed_out")

            // A failing tool is a 502; after enough failures its breaker opens: 503 with Retry-After.
            var statuses: [Int] = []
            for _ in 0..<5 { statuses.append(try await http(port: port, "POST", "/v1/tools/demo/flaky", body: #"{"fail":true}"#).status) }
            #expect(statuses.prefix(3).allSatisfy { $0 == 502 }, "\(statuses)")
            let open = try await http(port: port, "POST", "/v1/tools/demo/flaky", body: #"{"fail":false}"#)
            #expect(open.status == 503)
            #expect(errorCode(open.body) == "circuit_open")
            #expect((20...30).contains(Int(open.headers["retry-after"] ?? "") ?? 0), "\(open.headers)")
            // Other tools are unaffected (the breaker is per tool).
            #expect(try await http(port: port, "POST", "/v1/tools/demo/compute", body: #"{"n":10}"#).status == 200)
        }
    }

    @Test func aFullBulkheadIsA503() async throws {
        try await withToolServer({ configuration in
            configuration.policies.bulkheadMaxConcurrent = 1
        }) { port, _ in
            async let first = http(port: port, "POST", "/v1/tools/demo/sleep", body: #"{"ms":1000}"#)
            try await Task.sleep(for: .milliseconds(300))
            let second = try await http(port: port, "POST", "/v1/tools/demo/sleep", body: #"{"ms":10}"#)
            #expect(second.status == 503)
            #expect(errorCode(second.body) == "bulkhead_full")
            #expect(second.headers["retry-after"] != nil)
            #expect(try await first.status == 200)
        }
    }

    @Test func resultsAreCachedButSideEffectsNeverAre() async throws {
        try await withToolServer({ configuration in
            configuration.policies.cacheEnabled = true
            configuration.policies.cacheTools = ["demo:*"]
        }) { port, server in
            let first = try await http(port: port, "POST", "/v1/tools/demo/compute", body: #"{"n":50000}"#)
            let second = try await http(port: port, "POST", "/v1/tools/demo/compute", body: #"{"n":50000}"#)
            #expect(first.status == 200 && second.status == 200)
            #expect(first.body == second.body)
            #expect(second.headers["x-toolops-cache"] == "hit")
            #expect(server.assembly.demo?.computeRuns == 1)
            // demo:counter is tagged write: every call runs.
            let values = try await (0..<3).asyncMap { _ in
                try JSONValue(parsing: try await http(port: port, "POST", "/v1/tools/demo/counter", body: #"{"name":"c"}"#).body)["value"]
            }
            #expect(values == [1, 2, 3])
        }
    }

    @Test func authenticationFailuresAre401DenialsAre403AndAnUnreachableProviderIs503() async throws {
        let readerKey = "tk_reader_0123456789abcdefghijklmnop"
        let adminKey = "tk_admin_0123456789abcdefghijklmnopq"
        func digest(_ key: String) -> [UInt8] { Array(SHA256.hash(data: Array(key.utf8))) }
        try await withToolServer({ configuration in
            configuration.auth.enabled = true
            configuration.auth.apiKeys = [
                .init(id: "reader-1", digest: digest(readerKey), principal: "rita", tenant: "acme", roles: ["reader"]),
                .init(id: "admin-1", digest: digest(adminKey), principal: "ada", roles: ["admin"]),
            ]
            configuration.auth.roles = [
                "reader": (inherits: [], allow: ["demo:*"], deny: ["demo:counter"]),
                "admin": (inherits: [], allow: ["*"], deny: []),
            ]
            configuration.auth.jwksURL = "http://127.0.0.1:9/jwks"  // nobody listens: the JWT provider is unavailable
            configuration.auth.jwtAlgorithms = ["ES256"]
            configuration.auth.jwksTimeout = .milliseconds(300)
        }) { port, _ in
            let missing = try await http(port: port, "POST", "/v1/tools/demo/echo", body: "{}")
            #expect(missing.status == 401)
            #expect(missing.headers["www-authenticate"] == #"Bearer realm="toolops""#)
            #expect(errorCode(missing.body) == "unauthenticated")

            let wrong = try await http(port: port, "POST", "/v1/tools/demo/echo", headers: ["x-api-key": "tk_wrong_key_000000000000000000000"], body: "{}")
            #expect(wrong.status == 401)
            #expect(!wrong.body.contains("tk_wrong"))

            let reader = ["X-API-Key": readerKey]
            #expect(try await http(port: port, "POST", "/v1/tools/demo/echo", headers: reader, body: "{}").status == 200)
            let denied = try await http(port: port, "POST", "/v1/tools/demo/counter", headers: reader, body: "{}")
            #expect(denied.status == 403)
            #expect(errorCode(denied.body) == "forbidden")
            #expect(!denied.body.contains(readerKey))
            #expect(try await http(port: port, "POST", "/v1/tools/demo/counter", headers: ["x-api-key": adminKey], body: "{}").status == 200)

            let token = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1In0.c2ln"
            let unavailable = try await http(port: port, "POST", "/v1/tools/demo/echo", headers: ["Authorization": "Bearer \(token)"], body: "{}")
            #expect(unavailable.status == 503)
            #expect(errorCode(unavailable.body) == "authentication_unavailable")
            #expect(unavailable.headers["retry-after"] != nil)
            #expect(!unavailable.body.contains(token))
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}

/// A propagator that keeps the `traceparent` header it is given (the W3C parsing itself is
/// swift-otel's, bootstrapped by `toolops serve`).
struct TraceparentKeeper: Instrument {
    enum Key: ServiceContextKey { typealias Value = String }
    func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract.Carrier == Carrier {
        if let value = extractor.extract(key: "traceparent", from: carrier) { context[Key.self] = value }
    }
    func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject.Carrier == Carrier {}
}

@Suite("The tool endpoint's context")
struct ToolEndpointContextTests {
    @Test func theCallersTraceTenantAndCredentialsReachThePipelineAndNoFurther() async throws {
        let seen = Mutex<[ServiceContext]>([])
        let registry = try ToolRegistry([
            ToolDefinition(try ToolID("t:probe"), description: "records its context") { call in
                seen.withLock { $0.append(call.context) }
                return ToolResult(.object([:]))
            }
        ])
        let routes = ToolRoutes(
            registry: registry, pipeline: registry,
            configuration: .init(tenantHeader: "X-Tenant-ID", credentialHeaders: ["X-API-Key"], instrument: TraceparentKeeper()))
        try await serving(routes) { port in
            let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            let response = try await http(
                port: port, "POST", "/v1/tools/t/probe", headers: ["traceparent": traceparent, "x-tenant-id": "acme", "X-API-Key": "k-123"], body: "{}")
            #expect(response.status == 200)
            let context = try #require(seen.withLock { $0.first })
            #expect(context[TraceparentKeeper.Key.self] == traceparent)
            #expect(context.toolTenant == "acme")
            #expect(context.authCredentials?["x-api-key"] == "k-123")  // for the auth middleware (which removes it)
        }
    }

    /// Serves `routes` alone on a free port while `body` runs.
    func serving(_ routes: ToolRoutes, _ body: (Int) async throws -> Void) async throws {
        let router = Router()
        routes.register(on: router)
        let port = try RedisServer.freePort()
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: quietLogger)
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [], logger: quietLogger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            #expect(await waitFor(seconds: 10) { (try? await http(port: port, "GET", "/v1/tools"))?.status == 200 } != nil)
            try await body(port)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

extension ToolEndpointContextTests {
    /// Past `constantRouteLimit` tools the router gets no route per tool (it would try every
    /// sibling in turn): the parameterised route serves them, and still answers 404.
    @Test func aLargeRegistryIsServedThroughTheParameterisedRoute() async throws {
        let count = ToolRoutes.constantRouteLimit + 6
        let registry = try ToolRegistry(
            try (0..<count).map { index in
                ToolDefinition(try ToolID("bulk:t\(index)"), description: "returns its index") { _ in ToolResult(.integer(Int64(index))) }
            })
        try await serving(ToolRoutes(registry: registry, pipeline: registry)) { port in
            let answer = try await http(port: port, "POST", "/v1/tools/bulk/t42", body: "{}")
            #expect(answer.status == 200 && answer.body == "42")
            #expect(try await http(port: port, "POST", "/v1/tools/bulk/nope", body: "{}").status == 404)
        }
    }
}

@Suite("API keys managed with toolops keys", .timeLimit(.minutes(1)))
struct KeysCommandTests {
    @Test func aKeyCreatedWithTheCommandWorksAtOnceAndARevocationRefusesIt() async throws {
        let binary = try #require(toolopsBinary())
        try await withRedisServer { redis in
            try await withToolServer({ configuration in
                configuration.backend = .redis(.init(url: redis.url))
                configuration.auth.enabled = true
            }) { port, _ in
                #expect(try await http(port: port, "POST", "/v1/tools/demo/echo", body: "{}").status == 401)
                let created = try run(binary, ["keys", "create", "--redis", redis.url, "--principal", "ci-bot", "--tenant", "acme", "--id", "ci-1"])
                let key = try #require(created.split(separator: "\n").first { $0.hasPrefix("key: ") }.map { String($0.dropFirst(5)) })
                #expect(key.hasPrefix("tk_") && key.count == 35)
                // Only the digest is in Redis.
                let client = try RedisClient(url: redis.url, logger: quietLogger)
                defer { client.shutdown() }
                for name in try await client.send("KEYS", "*").array ?? [] {
                    let value = try await client.send("TYPE", name.string ?? "").string == "string" ? try await client.send("GET", name.string ?? "").string ?? "" : ""
                    #expect(!value.contains(key))
                }
                #expect(try await http(port: port, "POST", "/v1/tools/demo/echo", headers: ["X-API-Key": key], body: "{}").status == 200)

                _ = try run(binary, ["keys", "revoke", "--redis", redis.url, "--id", "ci-1"])
                let refused = await waitFor(seconds: 2) {
                    (try? await http(port: port, "POST", "/v1/tools/demo/echo", headers: ["X-API-Key": key], body: "{}"))?.status == 401
                }
                #expect(refused != nil, "the revoked key is refused")
                #expect(throws: (any Error).self) { try run(binary, ["keys", "revoke", "--redis", redis.url, "--id", "ci-1"]) }  // gone
            }
        }
    }
}
