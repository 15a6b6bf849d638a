import Foundation
import Testing
@testable import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("TLS to redis-server through OpenSSL", .timeLimit(.minutes(1)))
struct RedisTLSTests {
    let certs = TestCertificates.shared

    func client(_ server: RedisServer, _ tls: RedisTLSConfiguration, host: String = "127.0.0.1") throws -> RedisClient {
        var configuration = try RedisConfiguration(url: "rediss://\(host):\(server.port)")
        configuration.tls = tls
        configuration.connectTimeout = .seconds(2)
        return try RedisClient(configuration: configuration, logger: quietLogger)
    }

    @Test func rightCAWorksAndCarriesBinaryData() async throws {
        var options = RedisServer.Options()
        options.tls = TestCertificates.shared.serverFiles
        try await withRedisServer(options) { server in
            for host in ["127.0.0.1", "localhost"] {
                let client = try client(server, .enabled(caFile: certs.caCert), host: host)
                defer { client.shutdown() }
                let value = (0..<200_000).map { UInt8(truncatingIfNeeded: $0) }
                try await client.send("SET", "tls", value)
                #expect(try await client.send("GET", "tls") == .bulkString(value))
                // Concurrent callers are pipelined over TLS too.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<200 {
                        group.addTask {
                            let reply = try await client.send("ECHO", "\(index)")
                            #expect(reply == .bulkString(Array("\(index)".utf8)))
                        }
                    }
                    try await group.waitForAll()
                }
            }
        }
    }

    @Test func wrongCAIsRefused() async throws {
        var options = RedisServer.Options()
        options.tls = TestCertificates.shared.serverFiles
        try await withRedisServer(options) { server in
            let client = try client(server, .enabled(caFile: certs.otherCACert))
            defer { client.shutdown() }
            let error = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
            #expect(error?.code == .tlsVerificationFailed)
            #expect(error?.message.contains("certificate verification failed") == true, "\(error?.message ?? "")")
            // Not an outage: the fallback stores must not quietly take over.
            #expect(error?.isUnavailable == false)
        }
    }

    @Test func hostNameMismatchIsRefusedUnlessSwitchedOff() async throws {
        var options = RedisServer.Options()
        options.tls = TestCertificates.shared.serverFiles
        try await withRedisServer(options) { server in
            let strict = try client(server, .enabled(caFile: certs.caCert, serverName: "redis.example.com"))
            let relaxed = try client(
                server, .enabled(caFile: certs.caCert, serverName: "redis.example.com", verification: .noHostnameVerification))
            let insecure = try client(server, .enabled(caFile: certs.otherCACert, verification: .insecureNone))
            defer { [strict, relaxed, insecure].forEach { $0.shutdown() } }
            let error = await #expect(throws: RedisClientError.self) { try await strict.send("PING") }
            #expect(error?.code == .tlsVerificationFailed)
            #expect(try await relaxed.send("PING") == .simpleString("PONG"))
            #expect(try await insecure.send("PING") == .simpleString("PONG"))
        }
    }

    @Test func mutualTLS() async throws {
        var options = RedisServer.Options()
        options.tls = TestCertificates.shared.serverFiles
        options.requireClientCertificate = true
        try await withRedisServer(options) { server in
            let withCert = try client(
                server, .enabled(caFile: certs.caCert, certificateFile: certs.clientCert, privateKeyFile: certs.clientKey))
            let without = try client(server, .enabled(caFile: certs.caCert))
            defer { withCert.shutdown(); without.shutdown() }
            #expect(try await withCert.send("PING") == .simpleString("PONG"))
            let error = await #expect(throws: RedisClientError.self) { try await without.send("PING") }
            // The server refuses the handshake (or drops the connection right after it): either
            // way a typed unavailable error, never a reply.
            #expect(error?.isUnavailable == true)
            #expect([RedisClientError.Code.tlsFailure, .connectionClosed].contains(try #require(error).code), "\(String(describing: error))")
        }
    }

    @Test func missingCAFileIsAClearError() {
        let error = #expect(throws: RedisClientError.self) {
            try RedisClient(configuration: RedisConfiguration(tls: .enabled(caFile: "/nonexistent/ca.pem")))
        }
        #expect(error?.code == .tlsFailure)
        #expect(error?.message.contains("/nonexistent/ca.pem") == true)
    }
}

/// TLS and connection failures that must each be a clear, typed error, in bounded time.
@Suite("Connection failure modes", .timeLimit(.minutes(1)))
struct ConnectionFailureTests {
    let certs = TestCertificates.shared

    /// A TCP listener that accepts connections (the kernel completes them) but never answers.
    final class SilentListener {
        let fd: Int32
        let port: Int
        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            guard ok else {
                close(fd)
                throw TestFailure("cannot listen")
            }
            self.fd = fd
            port = Int(UInt16(bigEndian: address.sin_port))
        }
        deinit { close(fd) }
    }

    func client(_ url: String, tls: RedisTLSConfiguration? = nil, connectTimeout: Duration = .milliseconds(300)) throws -> RedisClient {
        var configuration = try RedisConfiguration(url: url)
        if let tls { configuration.tls = tls }
        configuration.connectTimeout = connectTimeout
        return try RedisClient(configuration: configuration, logger: quietLogger)
    }

    func failure(_ client: RedisClient) async -> (RedisClientError?, Duration) {
        let started = ContinuousClock.now
        let error = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
        return (error, ContinuousClock.now - started)
    }

    @Test func aSilentListenerIsAConnectTimeoutForPlainAndTLS() async throws {
        let listener = try SilentListener()
        for url in ["redis://127.0.0.1:\(listener.port)", "rediss://127.0.0.1:\(listener.port)"] {
            let client = try client(url, tls: url.hasPrefix("rediss") ? .enabled(caFile: certs.caCert) : nil)
            defer { client.shutdown() }
            let (error, waited) = await failure(client)
            #expect(error?.code == .connectTimeout, "\(url): \(String(describing: error))")
            #expect(error?.isUnavailable == true)
            #expect(waited >= .milliseconds(300) && waited < .seconds(5))  // the connect timeout, not the 5 s+ of anything else
        }
    }

    @Test func tlsAgainstAPlaintextServerTimesOutSayingSo() async throws {
        try await withRedisServer { server in
            // redis-server reads the ClientHello as the start of an inline command and waits for
            // the rest: the handshake can only time out, and the error says what it looks like.
            let client = try client("rediss://127.0.0.1:\(server.port)", tls: .enabled(caFile: certs.caCert), connectTimeout: .milliseconds(500))
            defer { client.shutdown() }
            let (error, waited) = await failure(client)
            #expect(error?.code == .connectTimeout)
            #expect(error?.message.contains("listening for TLS") == true, "\(String(describing: error))")
            #expect(error?.isUnavailable == true)
            #expect(waited < .seconds(5))  // the 500 ms connect timeout, not the 5 s command timeout or longer
        }
    }

    @Test func missingOrMismatchedClientCertificatesAreClearErrors() {
        let missing = #expect(throws: RedisClientError.self) {
            try RedisClient(configuration: RedisConfiguration(
                tls: .enabled(caFile: certs.caCert, certificateFile: "/nonexistent/client.crt", privateKeyFile: certs.clientKey)))
        }
        #expect(missing?.code == .tlsFailure && missing?.message.contains("/nonexistent/client.crt") == true)
        let missingKey = #expect(throws: RedisClientError.self) {
            try RedisClient(configuration: RedisConfiguration(
                tls: .enabled(caFile: certs.caCert, certificateFile: certs.clientCert, privateKeyFile: "/nonexistent/client.key")))
        }
        #expect(missingKey?.code == .tlsFailure && missingKey?.message.contains("/nonexistent/client.key") == true)
        // The server's key with the client's certificate: they do not belong together.
        let mismatched = #expect(throws: RedisClientError.self) {
            try RedisClient(configuration: RedisConfiguration(
                tls: .enabled(caFile: certs.caCert, certificateFile: certs.clientCert, privateKeyFile: certs.serverKey)))
        }
        #expect(mismatched?.code == .tlsFailure)
    }

    @Test func invalidServerNamesAreRefusedBeforeConnecting() {
        for name in ["", "two words", "nul\u{0}byte", String(repeating: "a", count: 254)] {
            let error = #expect(throws: RedisClientError.self) {
                try RedisClient(configuration: RedisConfiguration(tls: .enabled(caFile: certs.caCert, serverName: name)))
            }
            #expect(error?.code == .invalidConfiguration)
        }
    }

    @Test func anUnresolvableHostIsAnAddressResolutionError() async throws {
        let client = try client("redis://toolops-test.invalid:6379", connectTimeout: .seconds(5))
        defer { client.shutdown() }
        let (error, _) = await failure(client)
        #expect(error?.code == .addressResolution)
        #expect(error?.isUnavailable == true)
    }

    @Test func aConnectionClosedUnderACommandIsConnectionClosed() async throws {
        try await withRedisServer { server in
            let admin = try client(server.url)
            let client = try client(server.url)
            defer { client.shutdown(); admin.shutdown() }
            // BLPOP waits server-side; killing its connection meanwhile must fail it, typed.
            async let blocked: RESPValue = client.withConnection(commandTimeout: .seconds(20)) { lease in
                try await lease.send("BLPOP", "nothing", "10")
            }
            #expect(await eventually { ((try? await admin.send("CLIENT", "LIST").string) ?? "").contains("cmd=blpop") })
            _ = try await admin.send("CLIENT", "KILL", "USER", "default", "SKIPME", "yes")
            do {
                _ = try await blocked
                Issue.record("BLPOP returned after its connection was killed")
            } catch let error as RedisClientError {
                #expect(error.code == .connectionClosed, "\(error)")
                #expect(error.isUnavailable)
            }
        }
    }
}
