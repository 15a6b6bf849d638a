import Foundation
import Hummingbird
import ServiceLifecycle
import JWTKit
import NIOCore
import Synchronization
import Testing
import ToolOpsAuth
import ToolOpsCore
import ToolOpsTestSupport

/// A JWKS endpoint the test controls: the document it serves, whether it is up, how often it was asked.
final class JWKSServer: Sendable {
    let document = Mutex<String>(#"{"keys":[]}"#)
    let up = Mutex(true)
    let requests = Mutex(0)
    let port = Mutex<Int?>(nil)

    func application() -> some ApplicationProtocol {
        let router = Router()
        router.get("jwks") { [self] _, _ -> Response in
            requests.withLock { $0 += 1 }
            guard up.withLock({ $0 }) else { return Response(status: .serviceUnavailable) }
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: document.withLock { $0 })))
        }
        return Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { [self] channel in port.withLock { $0 = channel.localAddress?.port } }, logger: quietLogger)
    }
}

/// A signing key and its public JWK.
struct SigningKey {
    let kid: String
    let key = ES256PrivateKey()
    var jwk: String {
        let parameters = key.publicKey.parameters!
        return #"{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"\#(kid)","x":"\#(parameters.x)","y":"\#(parameters.y)"}"#
    }
    func sign(exp: Int64) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: key, kid: JWKIdentifier(string: kid))
        return try await keys.sign(TestClaims(exp: exp), kid: JWKIdentifier(string: kid))
    }
}

@Suite("JWKS", .timeLimit(.minutes(1)))
struct JWKSTests {
    let now = Int64(Date().timeIntervalSince1970)

    func withServer(_ body: (JWKSServer, String) async throws -> Void) async throws {
        let server = JWKSServer()
        try await withRunningServer(server.application(), port: { server.port.withLock { $0 } }) { port in
            try await body(server, "http://127.0.0.1:\(port)/jwks")
        }
    }

    func configuration() -> JWTAuthenticator.Configuration {
        .init(algorithms: ["ES256"], issuers: ["https://issuer.example"], audiences: ["tools"], maximumCachedTokens: 0)
    }

    @Test func rotatedKeysAreFetchedAndUnknownKidsCannotFloodTheEndpoint() async throws {
        try await withServer { server, url in
            let first = SigningKey(kid: "k1")
            server.document.withLock { $0 = #"{"keys":[\#(first.jwk)]}"# }
            let source = JWKSKeySource(.init(url: url, minimumRefetchInterval: .seconds(60)))
            let jwt = try JWTAuthenticator(jwks: source, configuration: configuration())
            #expect(try await jwt.authenticate(bearer(try await first.sign(exp: now + 300)))?.principal == "user-1")
            #expect(server.requests.withLock { $0 } == 1)
            _ = try await jwt.authenticate(bearer(try await first.sign(exp: now + 300)))
            #expect(server.requests.withLock { $0 } == 1)  // cached set

            // Rotation: the issuer publishes k2 and signs with it; k2 is unknown locally, so the
            // set is fetched again.
            let rotatedSource = JWKSKeySource(.init(url: url, minimumRefetchInterval: .zero))
            let rotated = try JWTAuthenticator(jwks: rotatedSource, configuration: configuration())
            _ = try await rotated.authenticate(bearer(try await first.sign(exp: now + 300)))  // fetches {k1}
            let second = SigningKey(kid: "k2")
            server.document.withLock { $0 = #"{"keys":[\#(first.jwk),\#(second.jwk)]}"# }
            let before = server.requests.withLock { $0 }
            #expect(try await rotated.authenticate(bearer(try await second.sign(exp: now + 300))) != nil)
            #expect(server.requests.withLock { $0 } == before + 1)

            // Made-up kids: refused, and with a 60 s refetch interval they cost no request.
            let forger = SigningKey(kid: "made-up")
            let asked = server.requests.withLock { $0 }
            for _ in 0..<20 {
                do {
                    _ = try await jwt.authenticate(bearer(try await forger.sign(exp: now + 300)))
                    Issue.record("an unknown kid must not verify")
                } catch {
                    #expect((error as? AuthError)?.reason == .invalidCredentials)
                }
            }
            #expect(server.requests.withLock { $0 } == asked)
        }
    }

    @Test func anOutageServesTheLastGoodSetForABoundedTime() async throws {
        try await withServer { server, url in
            let key = SigningKey(kid: "k1")
            server.document.withLock { $0 = #"{"keys":[\#(key.jwk)]}"# }
            // Every use refreshes (refresh interval zero); the set stays usable 1 s after its fetch.
            let source = JWKSKeySource(.init(url: url, refreshInterval: .zero, minimumRefetchInterval: .zero, maximumStaleness: .seconds(1)))
            let jwt = try JWTAuthenticator(jwks: source, configuration: configuration())
            let token = try await key.sign(exp: now + 300)
            #expect(try await jwt.authenticate(bearer(token)) != nil)
            server.up.withLock { $0 = false }
            #expect(try await jwt.authenticate(bearer(token)) != nil)  // stale, within the bound
            // An unknown kid while the endpoint is down: cannot be judged.
            do {
                _ = try await jwt.authenticate(bearer(try await SigningKey(kid: "new").sign(exp: now + 300)))
                Issue.record("expected providerUnavailable")
            } catch {
                #expect((error as? AuthError)?.reason == .providerUnavailable)
            }
            try await Task.sleep(for: .milliseconds(1100))
            do {
                _ = try await jwt.authenticate(bearer(token))
                Issue.record("past the staleness bound the set must not serve")
            } catch {
                #expect((error as? AuthError)?.reason == .providerUnavailable)
                #expect((error as? AuthError)?.toolOpsError.code == .authenticationUnavailable)
            }
            server.up.withLock { $0 = true }
            #expect(try await jwt.authenticate(bearer(token)) != nil)  // back
        }
    }

    @Test func hostileDocumentsAreRefusedWithinBounds() async throws {
        // Oversized, not a key set, keys without kid: each is a typed provider failure.
        let huge = String(repeating: " ", count: 300 * 1024)
        for document in [#"{"keys":[]}"# + huge, "not json", #"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#] {
            let source = JWKSKeySource(.init(url: "http://unused")) { _ in Array(document.utf8) }
            do {
                try await source.prefetch()
                Issue.record("expected a refusal")
            } catch {
                #expect(error.reason == .providerUnavailable)
            }
        }
        // A slow endpoint is cut off by the timeout.
        let slow = JWKSKeySource(.init(url: "http://127.0.0.1:9/jwks", timeout: .milliseconds(200)))
        let started = ContinuousClock.now
        await #expect(throws: AuthError.self) { try await slow.prefetch() }
        #expect(ContinuousClock.now - started < .seconds(3))
    }

    @Test func asAServiceItRefreshesInTheBackgroundUntilShutdown() async throws {
        try await withServer { server, url in
            let key = SigningKey(kid: "k1")
            server.document.withLock { $0 = #"{"keys":[\#(key.jwk)]}"# }
            let source = JWKSKeySource(.init(url: url, refreshInterval: .milliseconds(50)))
            let group = ServiceGroup(services: [source], gracefulShutdownSignals: [], logger: quietLogger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                // No token is verified: the fetches are the service's own.
                #expect(await waitFor(seconds: 5) { server.requests.withLock { $0 } >= 3 } != nil)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            let after = server.requests.withLock { $0 }
            try await Task.sleep(for: .milliseconds(200))
            #expect(server.requests.withLock { $0 } == after)  // stopped with the group
            let jwt = try JWTAuthenticator(jwks: source, configuration: configuration())
            #expect(try await jwt.authenticate(bearer(try await key.sign(exp: now + 300))) != nil)
        }
    }

    @Test func replicasSharingAStoreFetchOncePerIntervalBetweenThem() async throws {
        try await withServer { server, url in
            let first = SigningKey(kid: "k1")
            server.document.withLock { $0 = #"{"keys":[\#(first.jwk)]}"# }
            let shared = MemoryJWKSDocumentStore()
            let authenticators = try (0..<3).map { _ in
                try JWTAuthenticator(
                    jwks: JWKSKeySource(.init(url: url, minimumRefetchInterval: .milliseconds(300)), shared: shared), configuration: configuration())
            }
            for authenticator in authenticators { #expect(try await authenticator.authenticate(bearer(try await first.sign(exp: now + 300))) != nil) }
            #expect(server.requests.withLock { $0 } == 1)  // one replica fetched, the others read its document

            // A rotation seen by all three at once: one request between them.
            try await Task.sleep(for: .milliseconds(350))
            let second = SigningKey(kid: "k2")
            server.document.withLock { $0 = #"{"keys":[\#(first.jwk),\#(second.jwk)]}"# }
            let token = try await second.sign(exp: now + 300)
            let accepted = try await withThrowingTaskGroup(of: Bool.self) { group in
                for authenticator in authenticators { group.addTask { try await authenticator.authenticate(bearer(token)) != nil } }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(accepted == 3)
            #expect(server.requests.withLock { $0 } == 2)

            // Made-up kids on every replica, once the interval has passed: one request for the cluster.
            try await Task.sleep(for: .milliseconds(350))
            let forged = try await SigningKey(kid: "made-up").sign(exp: now + 300)
            for authenticator in authenticators {
                for _ in 0..<3 {
                    do {
                        _ = try await authenticator.authenticate(bearer(forged))
                        Issue.record("an unknown kid must not verify")
                    } catch {
                        #expect((error as? AuthError)?.reason == .invalidCredentials)
                    }
                }
            }
            #expect(server.requests.withLock { $0 } == 3)
        }
    }
}
