import Foundation
import JWTKit
import Synchronization
import Testing
import ToolOpsAuth
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsTestSupport
import ToolOpsTesting

/// What replicas share through Redis for authentication: JWKS documents and the right to fetch
/// them, and introspection verdicts.
@Suite("Redis auth sharing", .timeLimit(.minutes(1)))
struct RedisAuthSharingTests {
    let now = Int64(Date().timeIntervalSince1970)

    struct Claims: JWTPayload {
        var sub = "user-1"
        var exp: Int64
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    struct Key {
        let kid: String
        let key = ES256PrivateKey()
        var jwk: String {
            let parameters = key.publicKey.parameters!
            return #"{"kty":"EC","crv":"P-256","alg":"ES256","kid":"\#(kid)","x":"\#(parameters.x)","y":"\#(parameters.y)"}"#
        }
        func sign(exp: Int64) async throws -> String {
            let keys = JWTKeyCollection()
            await keys.add(ecdsa: key, kid: JWKIdentifier(string: kid))
            return try await keys.sign(Claims(exp: exp), kid: JWKIdentifier(string: kid))
        }
    }

    func bearer(_ token: String) -> AuthCredentials { AuthCredentials(headers: ["authorization": "Bearer \(token)"]) }

    @Test func aKeyRotationCostsTheEndpointOneRequestForAllReplicas() async throws {
        try await withRedisServer { server in
            let clients = try (0..<3).map { _ in try RedisClient(url: server.url, logger: quietLogger) }
            defer { clients.forEach { $0.shutdown() } }
            let document = Mutex("")
            let fetches = Mutex(0)
            let fetch: @Sendable (JWKSKeySource.Configuration) async throws -> [UInt8] = { _ in
                fetches.withLock { $0 += 1 }
                try await Task.sleep(for: .milliseconds(50))  // a real endpoint takes a while: the others must wait for it
                return Array(document.withLock { $0 }.utf8)
            }
            let first = Key(kid: "k1")
            document.withLock { $0 = #"{"keys":[\#(first.jwk)]}"# }
            let authenticators = try clients.map { client in
                try JWTAuthenticator(
                    jwks: JWKSKeySource(
                        .init(url: "https://idp.example/jwks", minimumRefetchInterval: .milliseconds(300)),
                        shared: RedisJWKSDocumentStore(client: client), fetch: fetch),
                    configuration: .init(algorithms: ["ES256"], maximumCachedTokens: 0))
            }
            for authenticator in authenticators { #expect(try await authenticator.authenticate(bearer(try await first.sign(exp: now + 300))) != nil) }
            #expect(fetches.withLock { $0 } == 1)

            try await Task.sleep(for: .milliseconds(350))
            let second = Key(kid: "k2")
            document.withLock { $0 = #"{"keys":[\#(first.jwk),\#(second.jwk)]}"# }
            let token = try await second.sign(exp: now + 300)
            let accepted = try await withThrowingTaskGroup(of: Bool.self) { group in
                for authenticator in authenticators { group.addTask { try await authenticator.authenticate(self.bearer(token)) != nil } }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(accepted == 3)
            #expect(fetches.withLock { $0 } == 2)

            // Redis gone: each replica fetches on its own budget rather than failing.
            server.kill()
            try await Task.sleep(for: .milliseconds(350))
            let third = Key(kid: "k3")
            document.withLock { $0 = #"{"keys":[\#(third.jwk)]}"# }
            #expect(try await authenticators[0].authenticate(bearer(try await third.sign(exp: now + 300))) != nil)
            #expect(fetches.withLock { $0 } == 3)
        }
    }

    @Test func aTokenIntrospectedThroughOneReplicaIsKnownToTheOthers() async throws {
        try await withRedisServer { server in
            let clients = try (0..<2).map { _ in try RedisClient(url: server.url, logger: quietLogger) }
            defer { clients.forEach { $0.shutdown() } }
            let token = "opaque-7d1e5f"
            let requests = Mutex(0)
            let transport: @Sendable (IntrospectionAuthenticator.Request) async throws -> (status: Int, body: [UInt8]) = { _ in
                requests.withLock { $0 += 1 }
                return (200, Array(#"{"active":true,"sub":"svc","scope":"a b","exp":\#(Int64(Date().timeIntervalSince1970) + 300)}"#.utf8))
            }
            let replicas = try clients.map { client in
                try IntrospectionAuthenticator(
                    .init(url: "https://idp.example/introspect", clientID: "c", clientSecret: "s"), cache: RedisIntrospectionCache(client: client),
                    transport: transport)
            }
            #expect(try await replicas[0].authenticate(bearer(token))?.principal == "svc")
            let identity = try await replicas[1].authenticate(bearer(token))
            #expect(identity?.principal == "svc" && identity?.scopes == ["a", "b"])
            #expect(requests.withLock { $0 } == 1)  // replica B read A's verdict

            // Kept by the token's hash, no longer than its exp, never the token itself.
            let keys = try await clients[0].send("KEYS", "toolops:introspect:*").array ?? []
            #expect(keys.count == 1)
            let name = keys.first?.string ?? ""
            #expect(!name.contains(token))
            let ttl = try await clients[0].send("PTTL", name).int ?? 0
            #expect(ttl > 0 && ttl <= 300_000)
            let stored = try await clients[0].send("GET", name).string ?? ""
            #expect(!stored.contains(token))

            // Redis down: the cache is passed by and the endpoint asked.
            server.kill()
            #expect(try await replicas[1].authenticate(bearer("another-token"))?.principal == "svc")
            #expect(requests.withLock { $0 } == 2)
        }
    }
}
