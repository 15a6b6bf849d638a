import Testing
import ToolOpsTestSupport
@testable import ToolOpsRedis

@Suite("Redis URLs and configuration", .timeLimit(.minutes(1)))
struct RedisConfigurationTests {
    @Test func plainURL() throws {
        let config = try RedisConfiguration(url: "redis://cache.internal:6380/3")
        #expect(config.endpoint == .tcp(host: "cache.internal", port: 6380))
        #expect(config.database == 3)
        #expect(config.password == nil && config.username == nil)
        #expect(!config.tls.isEnabled)
    }

    @Test func defaultsPortAndCredentials() throws {
        let config = try RedisConfiguration(url: "redis://app%40corp:p%3Ass@127.0.0.1")
        #expect(config.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(config.username == "app@corp")
        #expect(config.password == "p:ss")
        let passwordOnly = try RedisConfiguration(url: "redis://:secret@localhost:7000")
        #expect(passwordOnly.username == nil && passwordOnly.password == "secret")
    }

    @Test func tlsAndIPv6() throws {
        let config = try RedisConfiguration(url: "rediss://[::1]:6390/1")
        #expect(config.tls.isEnabled)
        #expect(config.tls.verification == .full)
        #expect(config.endpoint == .tcp(host: "::1", port: 6390))
        #expect(config.database == 1)
    }

    @Test func unixSocket() throws {
        let config = try RedisConfiguration(url: "unix:///var/run/redis.sock?db=2&password=pw")
        #expect(config.endpoint == .unix(path: "/var/run/redis.sock"))
        #expect(config.database == 2)
        #expect(config.password == "pw")
    }

    @Test(arguments: [
        ("localhost:6379", "missing scheme"),
        ("http://localhost", "unsupported scheme 'http'"),
        ("redis://", "missing host"),
        ("redis://host:0", "invalid port '0'"),
        ("redis://host:99999", "invalid port '99999'"),
        ("redis://host:abc", "invalid port 'abc'"),
        ("redis://host/x", "invalid database 'x'"),
        ("redis://host/-1", "invalid database '-1'"),
        ("redis://[::1", "unterminated IPv6"),
        ("redis://ho st", "invalid character in host"),
        ("redis://u:%zz@host", "malformed percent-encoding"),
        ("unix://relative.sock", "must be absolute"),
        ("unix:///tmp/r.sock?timeout=3", "unknown query parameter 'timeout'"),
        ("redis://host?db", "malformed query parameter"),
    ])
    func badURLsNameTheProblem(url: String, problem: String) {
        let error = #expect(throws: RedisClientError.self) { try RedisConfiguration(url: url) }
        #expect(error?.code == .invalidURL)
        #expect(error?.message.contains(problem) == true, "\(error?.message ?? "") should mention \(problem)")
    }

    @Test func errorsNeverLeakPasswords() throws {
        let error = #expect(throws: RedisClientError.self) { try RedisConfiguration(url: "redis://u:hunter2@host:0") }
        #expect(error?.message.contains("hunter2") == false)
        #expect(RedisConfiguration.redact("redis://u:hunter2@h:1/0") == "redis://u:***@h:1/0")
        #expect(RedisConfiguration.redact("unix:///s?password=hunter2&db=1") == "unix:///s?password=***&db=1")

        // Passwords holding '/', '?', ':' or '@' (unencoded): parsed as the password, and no
        // fragment of them in any message, redaction or description.
        let secret = "s3cr/et?x:y@z"
        let parsed = try #require(try? RedisConfiguration(url: "redis://app:\(secret)@host:6390/2"))
        #expect(parsed.password == secret && parsed.username == "app" && parsed.database == 2)
        #expect(parsed.endpoint == .tcp(host: "host", port: 6390))
        for url in [
            "redis://app:s3cr/et@host:6390", "redis://app:s3cr/et@host:99999", "redis://app:s3cr?et@host:0",
            "redis://app:\(secret)@host:0/x", "redis://host:1?password=hun@ter2", "redis://host:1?password=%zzhunter2",
            "unix:///s?password=hun@ter2&db=1",
        ] {
            let text = RedisConfiguration.redact(url)
            for fragment in ["s3cr", "et@", "hun", "ter2", "x:y"] { #expect(!text.contains(fragment), "\(text)") }
            do {
                let configuration = try RedisConfiguration(url: url)
                #expect(!"\(configuration)".contains("s3cr") && !"\(configuration)".contains("ter2"))
            } catch {
                for fragment in ["s3cr", "hun", "ter2", "x:y"] { #expect(!error.message.contains(fragment), "\(error.message)") }
            }
        }
        #expect("\(parsed)" == "redis(host:6390, user: app, password: ***, db: 2, tls: off)")
        #expect(!String(reflecting: parsed).contains("s3cr"))
    }

    @Test func invalidValuesAreRejected() {
        var config = RedisConfiguration()
        config.poolSize = 0
        #expect(throws: RedisClientError.self) { try config.validate() }
        config = RedisConfiguration()
        config.commandTimeout = .zero
        #expect(throws: RedisClientError.self) { try config.validate() }
        config = RedisConfiguration(endpoint: .unix(path: "/tmp/x"), tls: .enabled())
        #expect(throws: RedisClientError.self) { try config.validate() }
    }

    @Test func backoffGrowsIsCappedAndJittered() {
        let backoff = ReconnectBackoff(initialDelay: .milliseconds(100), maximumDelay: .seconds(1))
        var rng = SeededRandom(seed: 7)
        #expect(backoff.delay(afterFailures: 0, using: &rng) == .zero)
        var seen = Set<Duration>()
        for failures in 1...20 {
            let delay = backoff.delay(afterFailures: failures, using: &rng)
            let nominal = min(Duration.seconds(1), .milliseconds(100) * (1 << min(failures - 1, 30)))
            #expect(delay >= nominal / 2 && delay <= nominal, "failures \(failures): \(delay)")
            seen.insert(delay)
        }
        #expect(seen.count > 10)  // jitter actually varies
    }

    @Test func scriptDigestMatchesRedis() {
        // SHA-1 of "return 1" as reported by SCRIPT LOAD.
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}
