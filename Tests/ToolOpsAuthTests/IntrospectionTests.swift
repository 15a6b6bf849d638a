import Foundation
import Hummingbird
import NIOCore
import Synchronization
import Testing
import ToolOpsAuth
import ToolOpsCore
import ToolOpsTestSupport

/// An RFC 7662 endpoint the test controls: a verdict per token, up or down, slow or not, and
/// what each request carried.
final class IntrospectionServer: Sendable {
    struct Seen: Sendable {
        var authorization: String?
        var form: [String: String]
    }

    let answers = Mutex<[String: String]>([:])
    let up = Mutex(true)
    let delay = Mutex(Duration.zero)
    let body = Mutex<String?>(nil)  // when set, served instead of any verdict
    let seen = Mutex<[Seen]>([])
    let port = Mutex<Int?>(nil)

    var requests: Int { seen.withLock { $0.count } }

    func application() -> some ApplicationProtocol {
        let router = Router()
        router.post("introspect") { [self] request, _ -> Response in
            let buffer = try await request.body.collect(upTo: 1 << 20)
            var form: [String: String] = [:]
            for pair in String(buffer: buffer).split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? "" }
                if parts.count == 2 { form[parts[0]] = parts[1] }
            }
            seen.withLock { $0.append(Seen(authorization: request.headers[.authorization], form: form)) }
            let delay = delay.withLock { $0 }
            if delay > .zero { try await Task.sleep(for: delay) }
            guard up.withLock({ $0 }) else { return Response(status: .serviceUnavailable) }
            let text = body.withLock { $0 } ?? answers.withLock { $0[form["token"] ?? ""] } ?? #"{"active":false}"#
            return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        return Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { [self] channel in port.withLock { $0 = channel.localAddress?.port } }, logger: quietLogger)
    }
}

@Suite("Token introspection", .timeLimit(.minutes(1)))
struct IntrospectionTests {
    let now = Int64(Date().timeIntervalSince1970)
    let token = "opaque-token-3f9a2c7e81"
    let secret = "s3cr/et&more"

    func withServer(_ body: (IntrospectionServer, String) async throws -> Void) async throws {
        let server = IntrospectionServer()
        try await withRunningServer(server.application(), port: { server.port.withLock { $0 } }) { port in
            try await body(server, "http://127.0.0.1:\(port)/introspect")
        }
    }

    func configuration(_ url: String, _ method: IntrospectionAuthenticator.ClientAuthentication = .clientSecretBasic) -> IntrospectionAuthenticator.Configuration {
        .init(url: url, clientID: "tool:ops", clientSecret: secret, clientAuthentication: method, negativeTTL: .milliseconds(300), leeway: .zero)
    }

    func refusal(_ body: () async throws -> Identity?) async -> AuthError? {
        do {
            _ = try await body()
            return nil
        } catch {
            return error as? AuthError
        }
    }

    @Test func anActiveTokenIsAskedOnceAndKeptNoLongerThanItsExpiry() async throws {
        try await withServer { server, url in
            server.answers.withLock {
                $0[token] = #"{"active":true,"sub":"user-9","scope":"tools:read tools:write","client_id":"app","exp":\#(now + 2)}"#
            }
            let authenticator = try IntrospectionAuthenticator(configuration(url))
            let identity = try #require(try await authenticator.authenticate(bearer(token)))
            #expect(identity.principal == "user-9")
            #expect(identity.method == .oauth2)
            #expect(identity.scopes == ["tools:read", "tools:write"])
            #expect(identity.claims["client_id"] == "app")
            #expect(try await authenticator.authenticate(bearer(token))?.principal == "user-9")
            #expect(server.requests == 1)  // the second call was answered from the cache

            // Past its exp the cached verdict is gone and the token refused (the endpoint still
            // claims it active: we check exp ourselves).
            try await Task.sleep(for: .milliseconds(Int((now + 2 - Int64(Date().timeIntervalSince1970)) * 1000 + 1100)))
            #expect(await refusal { try await authenticator.authenticate(bearer(token)) }?.reason == .expired)
        }
    }

    @Test func anInactiveTokenIsRefusedAndThatIsKeptBriefly() async throws {
        try await withServer { server, url in
            let authenticator = try IntrospectionAuthenticator(configuration(url))
            #expect(await refusal { try await authenticator.authenticate(bearer(token)) }?.reason == .inactive)
            #expect(await refusal { try await authenticator.authenticate(bearer(token)) }?.reason == .inactive)
            #expect(server.requests == 1)
            // After the negative TTL the endpoint is asked again: the token may have become valid.
            server.answers.withLock { $0[token] = #"{"active":true,"sub":"late","exp":\#(now + 300)}"# }
            try await Task.sleep(for: .milliseconds(400))
            #expect(try await authenticator.authenticate(bearer(token))?.principal == "late")
            #expect(server.requests == 2)
        }
    }

    @Test func expiredWrongIssuerAndWrongAudienceAreRefused() async throws {
        try await withServer { server, url in
            var configuration = configuration(url)
            configuration.issuers = ["https://issuer.example"]
            configuration.audiences = ["tools"]
            let authenticator = try IntrospectionAuthenticator(configuration)
            let cases: [(String, AuthError.Reason)] = [
                (#"{"active":true,"sub":"a","iss":"https://issuer.example","aud":"tools","exp":\#(now - 5)}"#, .expired),
                (#"{"active":true,"sub":"a","iss":"https://issuer.example","aud":"tools","nbf":\#(now + 60)}"#, .notYetValid),
                (#"{"active":true,"sub":"a","iss":"https://other.example","aud":"tools"}"#, .invalidCredentials),
                (#"{"active":true,"sub":"a","iss":"https://issuer.example","aud":["web","mobile"]}"#, .invalidCredentials),
                (#"{"active":true,"iss":"https://issuer.example","aud":"tools"}"#, .invalidCredentials),  // no principal at all
            ]
            for (index, (answer, reason)) in cases.enumerated() {
                server.answers.withLock { $0["t\(index)"] = answer }
                #expect(await refusal { try await authenticator.authenticate(bearer("t\(index)")) }?.reason == reason, "\(answer)")
            }
            server.answers.withLock { $0["ok"] = #"{"active":true,"username":"bob","iss":"https://issuer.example","aud":["web","tools"]}"# }
            #expect(try await authenticator.authenticate(bearer("ok"))?.principal == "bob")
        }
    }

    @Test func anUnavailableEndpointIsNeitherYesNorNoAndNothingIsCached() async throws {
        try await withServer { server, url in
            server.answers.withLock { $0[token] = #"{"active":true,"sub":"user-9","exp":\#(now + 300)}"# }
            let authenticator = try IntrospectionAuthenticator(configuration(url))
            server.up.withLock { $0 = false }
            #expect(await refusal { try await authenticator.authenticate(bearer(token)) }?.reason == .providerUnavailable)
            server.up.withLock { $0 = true }
            #expect(try await authenticator.authenticate(bearer(token))?.principal == "user-9")  // the outage was not cached

            // Hostile or broken answers: typed, never a crash, never cached as a verdict.
            for body in [String(repeating: "x", count: 70 * 1024), "not json", #"{"sub":"no-active-member"}"#, #"{"active":"yes"}"#] {
                server.body.withLock { $0 = body }
                #expect(await refusal { try await authenticator.authenticate(bearer("other-\(body.count)")) }?.reason == .providerUnavailable)
            }
            server.body.withLock { $0 = nil }

            // Slow: cut off by the timeout.
            server.delay.withLock { $0 = .seconds(3) }
            var slow = configuration(url)
            slow.timeout = .milliseconds(200)
            let impatient = try IntrospectionAuthenticator(slow)
            let started = ContinuousClock.now
            #expect(await refusal { try await impatient.authenticate(bearer("slow-token")) }?.reason == .providerUnavailable)
            #expect(ContinuousClock.now - started < .seconds(2))
        }
        // Nobody listening.
        let nobody = try IntrospectionAuthenticator(configuration("http://127.0.0.1:9/introspect"))
        #expect(await refusal { try await nobody.authenticate(bearer(token)) }?.reason == .providerUnavailable)
    }

    @Test func clientCredentialsGoWhereEachMethodPutsThem() async throws {
        try await withServer { server, url in
            server.answers.withLock { $0[token] = #"{"active":true,"sub":"u"}"# }
            _ = try await IntrospectionAuthenticator(configuration(url, .clientSecretBasic)).authenticate(bearer(token))
            _ = try await IntrospectionAuthenticator(configuration(url, .clientSecretPost)).authenticate(bearer(token))
            let seen = server.seen.withLock { $0 }
            try #require(seen.count == 2)
            // Basic: the form-encoded id and secret (RFC 6749 §2.3.1), base64 in the header.
            let basic = try #require(seen[0].authorization)
            #expect(basic.hasPrefix("Basic "))
            let decoded = String(decoding: Data(base64Encoded: String(basic.dropFirst(6))) ?? Data(), as: UTF8.self)
            #expect(decoded == "tool%3Aops:s3cr%2Fet%26more")
            #expect(seen[0].form == ["token": token, "token_type_hint": "access_token"])
            // Post: both in the form, no header.
            #expect(seen[1].authorization == nil)
            #expect(seen[1].form == ["token": token, "token_type_hint": "access_token", "client_id": "tool:ops", "client_secret": secret])
        }
    }

    @Test func concurrentCallsWithOneTokenShareOneRequest() async throws {
        try await withServer { server, url in
            server.answers.withLock { $0[token] = #"{"active":true,"sub":"u","exp":\#(now + 300)}"# }
            server.delay.withLock { $0 = .milliseconds(200) }
            let authenticator = try IntrospectionAuthenticator(configuration(url))
            let principals = try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<10 { group.addTask { try await authenticator.authenticate(bearer(token))?.principal } }
                return try await group.reduce(into: [String?]()) { $0.append($1) }
            }
            #expect(principals == Array(repeating: "u", count: 10))
            #expect(server.requests == 1)
        }
    }

    @Test func noTokenOrSecretAppearsInErrorsOrDescriptions() async throws {
        let configuration = configuration("https://user:pw@auth.example/introspect?key=abc")
        #expect(!configuration.description.contains(secret))
        #expect(!configuration.description.contains("pw"))
        #expect(!configuration.description.contains("abc"))
        let nobody = try IntrospectionAuthenticator(self.configuration("http://127.0.0.1:9/introspect"))
        let error = await refusal { try await nobody.authenticate(bearer(token)) }
        let text = "\(String(describing: error)) \(error?.toolOpsError.description ?? "")"
        #expect(!text.contains(token) && !text.contains(secret))
        // Oversized tokens are refused unsent.
        #expect(await refusal { try await nobody.authenticate(bearer(String(repeating: "a", count: 20_000))) }?.reason == .malformed)
        #expect(nobody.requests == 1)
    }

    @Test func verdictsRoundTripThroughTheirStoredForm() throws {
        let identity = Identity(
            principal: "p", tenant: "t", roles: ["r"], scopes: ["s1", "s2"], method: .oauth2, claims: ["client_id": "c"],
            expiresAt: ClockInstant(nanoseconds: 1_700_000_000_000_000_000))
        for verdict in [IntrospectionVerdict.active(identity), .refused(.inactive), .refused(.expired)] {
            #expect(try IntrospectionVerdict(canonicalJSON: verdict.canonicalJSON()) == verdict)
        }
        for corrupt in ["", "{", #"{"refused":"whatever"}"#, #"{"active":{"principal":"p"}}"#, #"{"active":"p"}"#] {
            #expect(throws: ToolOpsError.self) { try IntrospectionVerdict(canonicalJSON: Array(corrupt.utf8)) }
        }
    }
}
