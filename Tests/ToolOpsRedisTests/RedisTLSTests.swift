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
            #expect(error?.code == .tlsFailure)
            #expect(error?.message.contains("certificate verification failed") == true, "\(error?.message ?? "")")
            #expect(error?.isUnavailable == true)
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
            #expect(error?.code == .tlsFailure)
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
            #expect(error?.isUnavailable == true)
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
