import Crypto
import Foundation
import JWTKit
import Testing
import ToolOpsAuth
import ToolOpsCore
import ToolOpsTesting
import _CryptoExtras

/// Claims as a test writes them: any subset, `aud` as a string or an array.
struct TestClaims: JWTPayload {
    var sub: String? = "user-1"
    var iss: String? = "https://issuer.example"
    var aud: [String]? = ["tools"]
    var audString: String?
    var exp: Int64?
    var nbf: Int64?
    var iat: Int64?
    var roles: [String]? = ["reader"]
    var scope: String? = "tools.read tools.write"
    var tenant: String? = "acme"

    enum Keys: String, CodingKey { case sub, iss, aud, exp, nbf, iat, roles, scope, tenant }

    init(exp: Int64?) { self.exp = exp }
    init(from decoder: any Decoder) throws {}
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encodeIfPresent(sub, forKey: .sub)
        try container.encodeIfPresent(iss, forKey: .iss)
        if let audString { try container.encode(audString, forKey: .aud) } else { try container.encodeIfPresent(aud, forKey: .aud) }
        try container.encodeIfPresent(exp, forKey: .exp)
        try container.encodeIfPresent(nbf, forKey: .nbf)
        try container.encodeIfPresent(iat, forKey: .iat)
        try container.encodeIfPresent(roles, forKey: .roles)
        try container.encodeIfPresent(scope, forKey: .scope)
        try container.encodeIfPresent(tenant, forKey: .tenant)
    }
    func verify(using algorithm: some JWTAlgorithm) throws {}
}

/// Keys for signing (private) and for the authenticator (public), made once.
struct TestKeys {
    let rsa: JWTKit.Insecure.RSA.PrivateKey
    let ec: ES256PrivateKey
    let hmac = HMACKey(from: Array(repeating: UInt8(9), count: 32))
    let signer = JWTKeyCollection()
    let verifier = JWTKeyCollection()

    static func make() async throws -> TestKeys {
        let keys = TestKeys(rsa: try JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048)), ec: ES256PrivateKey())
        await keys.signer.add(rsa: keys.rsa, digestAlgorithm: .sha256, kid: "rsa-1")
        await keys.signer.add(ecdsa: keys.ec, kid: "ec-1")
        await keys.signer.add(hmac: keys.hmac, digestAlgorithm: .sha256, kid: "hs-1")
        await keys.verifier.add(rsa: keys.rsa.publicKey, digestAlgorithm: .sha256, kid: "rsa-1")
        await keys.verifier.add(ecdsa: keys.ec.publicKey, kid: "ec-1")
        await keys.verifier.add(hmac: keys.hmac, digestAlgorithm: .sha256, kid: "hs-1")
        return keys
    }

    func authenticator(_ configuration: JWTAuthenticator.Configuration = .init(issuers: ["https://issuer.example"], audiences: ["tools"]), clock: any ToolOpsClock = WallClock()) throws -> JWTAuthenticator {
        try JWTAuthenticator(keys: .init(verifier, ids: ["rsa-1", "ec-1", "hs-1"]), configuration: configuration, clock: clock)
    }

    func sign(_ claims: TestClaims, kid: String) async throws -> String {
        try await signer.sign(claims, kid: JWKIdentifier(string: kid))
    }
}

func base64url(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

func bearer(_ token: String) -> AuthCredentials { AuthCredentials(headers: ["Authorization": "Bearer \(token)"]) }

@Suite("JWT")
struct JWTTests {
    let now = Int64(Date().timeIntervalSince1970)

    func refusal(_ authenticator: JWTAuthenticator, _ token: String) async -> AuthError? {
        do {
            _ = try await authenticator.authenticate(bearer(token))
            return nil
        } catch {
            #expect(!"\(error)".contains(token), "the token leaked into the error")
            return error
        }
    }

    @Test func validRSAAndECTokensAreIdentities() async throws {
        let keys = try await TestKeys.make()
        let authenticator = try keys.authenticator(.init(issuers: ["https://issuer.example"], audiences: ["tools"], tenantClaim: "tenant"))
        for kid in ["rsa-1", "ec-1"] {
            let identity = try await authenticator.authenticate(bearer(try await keys.sign(TestClaims(exp: now + 300), kid: kid)))
            #expect(identity?.principal == "user-1")
            #expect(identity?.tenant == "acme")
            #expect(identity?.roles == ["reader"])
            #expect(identity?.scopes == ["tools.read", "tools.write"])
            #expect(identity?.method == .jwt)
        }
        var single = TestClaims(exp: now + 300)
        single.audString = "tools"  // aud as a plain string
        #expect(try await authenticator.authenticate(bearer(try await keys.sign(single, kid: "ec-1"))) != nil)
    }

    @Test func algNoneIsNeverAccepted() async throws {
        let keys = try await TestKeys.make()
        let authenticator = try keys.authenticator(.init(algorithms: ["RS256", "none"], issuers: ["https://issuer.example"]))
        let header = base64url(Array(#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#.utf8))
        let payload = base64url(Array(#"{"sub":"admin","iss":"https://issuer.example","exp":\#(now + 300)}"#.utf8))
        #expect(await refusal(authenticator, "\(header).\(payload).")?.reason == .invalidCredentials)
    }

    @Test func anHMACSignatureMadeWithThePublicKeyIsRefused() async throws {
        let keys = try await TestKeys.make()
        // The classic confusion: HS256 "signed" with the RSA public key's bytes, under the RSA kid.
        let publicPEM = try keys.rsa.publicKey.pemRepresentation
        let header = base64url(Array(#"{"alg":"HS256","typ":"JWT","kid":"rsa-1"}"#.utf8))
        let payload = base64url(Array(#"{"sub":"admin","iss":"https://issuer.example","aud":"tools","exp":\#(now + 300)}"#.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Array("\(header).\(payload)".utf8), using: SymmetricKey(data: Array(publicPEM.utf8)))
        let forged = "\(header).\(payload).\(base64url(Array(mac)))"
        // Refused with HS256 disallowed (the default) …
        #expect(await refusal(try keys.authenticator(), forged)?.reason == .invalidCredentials)
        // … and with HS256 allowed: the rsa-1 key is RS256, whatever the header says.
        let permissive = try keys.authenticator(.init(algorithms: ["RS256", "HS256"], issuers: ["https://issuer.example"], audiences: ["tools"]))
        #expect(await refusal(permissive, forged)?.reason == .invalidCredentials)
        // An HS256 token under the HS key is fine when HS256 is allowed.
        #expect(try await permissive.authenticate(bearer(try await keys.sign(TestClaims(exp: now + 300), kid: "hs-1"))) != nil)
    }

    @Test func aTamperedTokenOrAnUnknownKeyIdIsRefused() async throws {
        let keys = try await TestKeys.make()
        let authenticator = try keys.authenticator()
        let token = try await keys.sign(TestClaims(exp: now + 300), kid: "rsa-1")
        var parts = token.split(separator: ".").map(String.init)
        parts[1] = base64url(Array(#"{"sub":"admin","iss":"https://issuer.example","aud":"tools","exp":\#(now + 300)}"#.utf8))
        #expect(await refusal(authenticator, parts.joined(separator: "."))?.reason == .invalidCredentials)
        let other = JWTKeyCollection()
        await other.add(ecdsa: ES256PrivateKey(), kid: "ec-9")
        #expect(await refusal(authenticator, try await other.sign(TestClaims(exp: now + 300), kid: "ec-9"))?.reason == .invalidCredentials)
        // A kid-less token is not tried against some default key.
        await other.add(ecdsa: ES256PrivateKey())
        #expect(await refusal(authenticator, try await other.sign(TestClaims(exp: now + 300)))?.reason == .invalidCredentials)
        // Garbage.
        #expect(await refusal(authenticator, "not.a.jwt!")?.reason == .malformed)
        #expect(await refusal(authenticator, String(repeating: "a", count: 20_000))?.reason == .malformed)
    }

    @Test func timesAreCheckedWithTheLeeway() async throws {
        let keys = try await TestKeys.make()
        let strict = try keys.authenticator(.init(issuers: ["https://issuer.example"], audiences: ["tools"], leeway: .zero))
        let lenient = try keys.authenticator(.init(issuers: ["https://issuer.example"], audiences: ["tools"], leeway: .seconds(60)))
        let expired = try await keys.sign(TestClaims(exp: now - 30), kid: "ec-1")
        #expect(await refusal(strict, expired)?.reason == .expired)
        #expect(try await lenient.authenticate(bearer(expired)) != nil)
        #expect(await refusal(lenient, try await keys.sign(TestClaims(exp: now - 120), kid: "ec-1"))?.reason == .expired)
        var early = TestClaims(exp: now + 600)
        early.nbf = now + 30
        let notYet = try await keys.sign(early, kid: "ec-1")
        #expect(await refusal(strict, notYet)?.reason == .notYetValid)
        #expect(try await lenient.authenticate(bearer(notYet)) != nil)
        #expect(await refusal(strict, try await keys.sign(TestClaims(exp: nil), kid: "ec-1"))?.reason == .invalidCredentials)
    }

    @Test func aCachedTokenStillExpires() async throws {
        let keys = try await TestKeys.make()
        let clock = ManualClock(now: ClockInstant(nanoseconds: now * 1_000_000_000))
        let authenticator = try keys.authenticator(.init(issuers: ["https://issuer.example"], audiences: ["tools"], leeway: .zero), clock: clock)
        let token = try await keys.sign(TestClaims(exp: now + 10), kid: "rsa-1")
        #expect(try await authenticator.authenticate(bearer(token)) != nil)
        #expect(authenticator.cachedTokens == 1)
        clock.advance(by: .seconds(11))
        #expect(await refusal(authenticator, token)?.reason == .expired)
    }

    @Test func wrongIssuerOrAudienceIsRefused() async throws {
        let keys = try await TestKeys.make()
        let authenticator = try keys.authenticator()
        var issuer = TestClaims(exp: now + 300)
        issuer.iss = "https://evil.example"
        #expect(await refusal(authenticator, try await keys.sign(issuer, kid: "ec-1"))?.reason == .invalidCredentials)
        var audience = TestClaims(exp: now + 300)
        audience.aud = ["other", "api"]
        #expect(await refusal(authenticator, try await keys.sign(audience, kid: "ec-1"))?.reason == .invalidCredentials)
        var none = TestClaims(exp: now + 300)
        none.aud = nil
        #expect(await refusal(authenticator, try await keys.sign(none, kid: "ec-1"))?.reason == .invalidCredentials)
    }
}
