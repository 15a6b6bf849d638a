import Foundation
import Testing
import ToolOpsCore
import ToolOpsServer
import ToolOpsTestSupport

@Suite("Configuration")
struct ConfigurationTests {
    /// The repository's examples directory.
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("examples")

    func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "toolops-config-\(UUID().uuidString).json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func loadError(file: String? = nil, environment: [String: String] = [:], overrides: [String] = []) -> String? {
        do {
            _ = try ToolOpsConfiguration.load(ConfigurationSource(file: file, environment: environment, overrides: overrides))
            return nil
        } catch {
            return error.message
        }
    }

    @Test func everyExampleLoadsAndBuildsAPipeline() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.examples.path).filter { $0.hasSuffix(".json") || $0.hasSuffix(".yaml") }
            .sorted()
        #expect(files == ["compose.json", "mcp-proxy.json", "single-replica.json", "single-replica.yaml", "three-replicas-redis.json"])
        for file in files {
            let configuration = try ToolOpsConfiguration.load(ConfigurationSource(file: Self.examples.appendingPathComponent(file).path, environment: [:]))
            #expect(configuration.policies.rateLimitRules.isEmpty == false, "\(file)")
            #expect(configuration.policies.cacheEnabled, "\(file)")
            if !file.hasPrefix("single-replica") {
                guard case .redis(let redis) = configuration.backend else {
                    Issue.record("\(file) should use Redis")
                    continue
                }
                #expect(redis.keyPrefix == "toolops")
            }
            // The memory example assembles without any server running.
            if file == "single-replica.json" {
                let assembly = try ToolOpsAssembly(configuration, replicaID: "r1", logger: quietLogger)
                #expect(assembly.pipeline.middlewares.count == 7)  // observe, rate limit, cache, retry, breaker, bulkhead, timeout
            }
        }
    }

    @Test func flagsOverrideTheEnvironmentWhichOverridesTheFile() throws {
        let file = try write(#"{"server":{"port":7000,"host":"0.0.0.0","maxBodyBytes":2048},"policies":{"timeout":"3s"}}"#)
        let source = try ConfigurationSource(
            file: file, environment: ["TOOLOPS_SERVER_PORT": "7001", "TOOLOPS_SERVER_MAX_BODY_BYTES": "4096", "TOOLOPS_TEST_REDIS_URL": "not ours", "HOME": "/"],
            overrides: ["server.port=7002", "policies.timeout=250ms"])
        let configuration = try ToolOpsConfiguration.load(source)
        #expect(configuration.server.port == 7002)  // flag
        #expect(configuration.server.maximumBodyBytes == 4096)  // environment
        #expect(configuration.server.host == "0.0.0.0")  // file
        #expect(configuration.server.eventLoopThreads == nil, "NIO's shared group unless set")
        #expect(configuration.policies.timeout == .milliseconds(250))
        // A section given only by the environment.
        let redis = try ToolOpsConfiguration.load(
            ConfigurationSource(environment: ["TOOLOPS_STATE_BACKEND": "redis", "TOOLOPS_STATE_REDIS_URL": "redis://10.0.0.1:6380"]))
        guard case .redis(let settings) = redis.backend else { throw TestFailure("expected Redis") }
        #expect(settings.url == "redis://10.0.0.1:6380")
        let tuned = try ToolOpsConfiguration.load(
            ConfigurationSource(
                environment: ["TOOLOPS_STATE_BACKEND": "redis", "TOOLOPS_STATE_REDIS_URL": "redis://h:1", "TOOLOPS_STATE_REDIS_POOL_SIZE": "4"],
                overrides: ["state.redis.busyPoll=200us", "state.redis.commandTimeout=750ms", "policies.rateLimit.leaseWindow=5ms"]))
        guard case .redis(let tunedRedis) = tuned.backend else { throw TestFailure("expected Redis") }
        #expect(tunedRedis.poolSize == 4 && tunedRedis.busyPoll == .microseconds(200) && tunedRedis.commandTimeout == .milliseconds(750))
        #expect(tuned.policies.rateLimitLeaseWindow == .milliseconds(5))
        #expect(redis.policies.rateLimitLeaseWindow == .milliseconds(20), "the default")
    }

    @Test func unknownKeysAndBadValuesAreErrorsNamingTheKey() throws {
        let cases: [(file: String?, environment: [String: String], overrides: [String], mentions: [String])] = [
            (#"{"server":{"prot":8080}}"#, [:], [], ["unknown configuration key", "server.prot"]),
            (#"{"policies":{"rateLimit":{"rules":[{"rate":5,"burts":3}]}}}"#, [:], [], ["policies.rateLimit.rules[0].burts"]),
            (nil, ["TOOLOPS_SERVER_PROT": "1"], [], ["TOOLOPS_SERVER_PROT"]),
            (nil, [:], ["server.prot=1"], ["--set server.prot"]),
            (#"{"server":{"port":"eighty"}}"#, [:], [], ["server.port", "expected an integer"]),
            (nil, ["TOOLOPS_SERVER_PORT": "70000"], [], ["server.port", "TOOLOPS_SERVER_PORT", "0…65535"]),
            (#"{"policies":{"timeout":"soon"}}"#, [:], [], ["policies.timeout", "duration"]),
            (#"{"state":{"backend":"redis","redis":{"url":"redis://h:1"}},"policies":{"circuitBreaker":{"window":50}}}"#, [:], [], ["window must be a duration with the Redis backend"]),
            (#"{"state":{"backend":"mongo"}}"#, [:], [], ["state.backend", "memory, file, redis"]),
            (#"{"state":{"backend":"redis"}}"#, [:], [], ["state.redis.url is required"]),
            (#"{"state":{"backend":"redis","redis":{"url":"http://x"}}}"#, [:], [], ["state.redis.url"]),
            (#"{"policies":{"rateLimit":{"rules":[{"tools":"bad tool","rate":1}]}}}"#, [:], [], ["rules[0].tools"]),
            (#"{"replica":{"heartbeatInterval":"10s","registrationTTL":"5s"}}"#, [:], [], ["registrationTTL"]),
            ("[1,2]", [:], [], ["JSON object"]),
            (#"{"auth":{"jwt":{"jwksURL":"https://idp/jwks"},"introspection":{"url":"https://idp/introspect","clientID":"c"}}}"#, [:], [], ["configure one of them"]),
            (#"{"auth":{"enabled":true}}"#, [:], [], ["every call would be refused"]),
            ("{not json", [:], [], ["not valid JSON"]),
            (#"{"policies":{"rateLimit":{"leaseWindow":"5s"}}}"#, [:], [], ["policies.rateLimit.leaseWindow", "above 1s"]),
            (nil, ["TOOLOPS_SERVER_EVENT_LOOP_THREADS": "0"], [], ["server.eventLoopThreads", "TOOLOPS_SERVER_EVENT_LOOP_THREADS", "1…256"]),
        ]
        for item in cases {
            let file = try item.file.map(write)
            let message = loadError(file: file, environment: item.environment, overrides: item.overrides)
            for mention in item.mentions { #expect(message?.contains(mention) == true, "\(message ?? "no error") should mention \(mention)") }
        }
        #expect(loadError(file: "/nonexistent/toolops.json")?.contains("cannot be read") == true)
    }

    @Test func secretsComeFromFilesOrTheEnvironmentAndAreNeverPrinted() throws {
        let secretFile = try write("pa55/word@with:odd?chars\n")
        let configuration = try ToolOpsConfiguration.load(
            ConfigurationSource(
                environment: [
                    "TOOLOPS_STATE_BACKEND": "redis", "TOOLOPS_STATE_REDIS_URL": "redis://:inline-secret@127.0.0.1:6379",
                    "TOOLOPS_STATE_REDIS_PASSWORD_FILE": secretFile,
                ]))
        guard case .redis(let redis) = configuration.backend else { throw TestFailure("expected Redis") }
        #expect(redis.password == "pa55/word@with:odd?chars")
        #expect(!redis.description.contains("pa55"))
        #expect(!redis.description.contains("inline-secret"))
        // An error about a neighbouring key shows no secret either.
        let message = loadError(environment: ["TOOLOPS_STATE_BACKEND": "redis", "TOOLOPS_STATE_REDIS_URL": "redis://:hunter2@127.0.0.1:notaport"])
        #expect(message != nil)
        #expect(message?.contains("hunter2") == false, "\(message ?? "")")
    }

    @Test func yamlFilesReadLikeJSONFilesWithinBounds() throws {
        let json = try ToolOpsConfiguration.load(ConfigurationSource(file: Self.examples.appendingPathComponent("single-replica.json").path, environment: [:]))
        let yaml = try ToolOpsConfiguration.load(ConfigurationSource(file: Self.examples.appendingPathComponent("single-replica.yaml").path, environment: [:]))
        #expect(yaml.policies.rateLimitRules.map(\.rate) == json.policies.rateLimitRules.map(\.rate))
        #expect(yaml.policies.rateLimitRules.map(\.key) == json.policies.rateLimitRules.map(\.key))
        #expect(yaml.policies.timeout == json.policies.timeout && yaml.policies.breakerWindow == json.policies.breakerWindow)
        #expect(yaml.policies.cacheTools == json.policies.cacheTools && yaml.server.port == json.server.port)

        func yamlError(_ text: String) throws -> String? {
            let path = NSTemporaryDirectory() + "toolops-config-\(UUID().uuidString).yaml"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: path) }
            return loadError(file: path)
        }
        // Unknown keys and bad values are errors as in JSON.
        #expect(try yamlError("server:\n  prot: 1\n")?.contains("server.prot") == true)
        #expect(try yamlError("server:\n  port: eighty\n")?.contains("expected an integer") == true)
        #expect(try yamlError("server: [unclosed\n")?.contains("not valid YAML") == true)
        #expect(try yamlError("server:\n  port: 1\n  port: 2\n") != nil)
        // Aliases that expand exponentially are refused, not expanded.
        var laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1..<9 { laughs += "a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ") + "]\n" }
        #expect(try yamlError(laughs)?.contains("too large") == true)
    }

    @Test func environmentNamesFollowTheKeyPath() {
        #expect(ConfigurationSource.environmentName(["server", "maxBodyBytes"]) == "TOOLOPS_SERVER_MAX_BODY_BYTES")
        #expect(ConfigurationSource.environmentName(["state", "redis", "tls", "caFile"]) == "TOOLOPS_STATE_REDIS_TLS_CA_FILE")
        #expect(ConfigurationSource.environmentName(["replica", "registrationTTL"]) == "TOOLOPS_REPLICA_REGISTRATION_TTL")
    }
}
