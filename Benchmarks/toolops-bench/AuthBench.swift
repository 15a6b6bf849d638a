import ArgumentParser
import Foundation
import JWTKit
import ToolOpsAuth
import ToolOpsCore

/// `toolops-bench auth`: per-call cost of API-key authentication (a cached, verified key) and
/// of RBAC decisions over a 50-role table, with the SHA-256 of the key alone as a reference
/// (the floor of any scheme that does not keep keys in plain text).
struct AuthBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth",
        abstract: "Cached API-key authentication and RBAC decisions (50 roles), per call."
    )

    @Option(help: "Iterations per measurement.")
    var iterations: Int = 500_000

    @Option(help: "Rounds; the fastest is reported.")
    var rounds: Int = 5

    func run() async throws {
        let key = "tk_live_0123456789abcdefghijklmnopqrstuv"
        let hasher = APIKeyHasher.sha256
        let peppered = try APIKeyHasher.hmacSHA256(pepper: Array(repeating: 42, count: 32))
        let store = MemoryAPIKeyStore([
            APIKeyRecord(id: "k", digest: hasher.digest(key), principal: "svc", tenant: "acme", roles: ["role-7"])
        ])
        let pepperedStore = MemoryAPIKeyStore([APIKeyRecord(id: "k", digest: peppered.digest(key), principal: "svc", roles: ["role-7"])])
        let plain = APIKeyAuthenticator(store: store)
        let withPepper = APIKeyAuthenticator(store: pepperedStore, hasher: peppered)
        let credentials = AuthCredentials(headers: ["X-API-Key": key, "Accept": "application/json", "User-Agent": "bench"])
        _ = try await plain.authenticate(credentials)
        _ = try await withPepper.authenticate(credentials)

        // 50 roles, each inheriting the previous one's, four rules each (one deny).
        var roles: [String: RBACPolicy.Role] = [:]
        for index in 0..<50 {
            roles["role-\(index)"] = RBACPolicy.Role(
                inherits: index > 0 ? ["role-\(index - 1)"] : [],
                allow: [
                    RBACPolicy.Rule(tools: try ToolGlob("ns\(index):*")), RBACPolicy.Rule(tools: try ToolGlob("*:get_\(index)_*")),
                    RBACPolicy.Rule(tools: try ToolGlob("shared:tool_\(index)"), actions: ["call"]),
                ],
                deny: [RBACPolicy.Rule(tools: try ToolGlob("ns\(index):delete_*"))])
        }
        let rbac = RBACAuthorizer(try RBACPolicy(roles: roles))
        let shallow = Identity(principal: "svc", roles: ["role-3"], method: .apiKey)
        let deep = Identity(principal: "svc", roles: ["role-49"], method: .apiKey)
        let tool = try ToolID("ns2:search")

        say("\(iterations) iterations, best of \(rounds) rounds")
        say("")
        say(pad("operation", 58) + "ns/op")
        func row(_ name: String, iterations: Int = iterations, _ body: () async throws -> Void) async rethrows {
            var best = Double.infinity
            for _ in 0..<rounds {
                let start = ContinuousClock.now
                for _ in 0..<iterations { try await body() }
                best = min(best, (ContinuousClock.now - start).secondsDouble * 1e9 / Double(iterations))
            }
            say(pad(name, 58) + String(format: "%.0f", best))
        }
        try await row("SHA-256 of the key alone (reference floor)") { _ = hasher.digest(key) }
        try await row("API key, cached (SHA-256)") { _ = try await plain.authenticate(credentials) }
        try await row("API key, cached (HMAC-SHA-256 with a pepper)") { _ = try await withPepper.authenticate(credentials) }
        await row("RBAC, 50 roles, identity with 1 role (4 inherited)") { _ = rbac.decide(shallow, tool: tool, action: "call") }
        await row("RBAC, 50 roles, identity with 1 role (50 inherited)") { _ = rbac.decide(deep, tool: tool, action: "call") }
        // JWT: our authenticator (first verification of a token, and the same token again —
        // a client reuses its token — served from the verified-token cache) against jwt-kit's
        // own verification of the same token.
        struct Claims: JWTPayload {
            var sub = SubjectClaim(value: "user-1")
            var iss = IssuerClaim(value: "https://issuer.example")
            var exp = ExpirationClaim(value: Date().addingTimeInterval(3600))
            func verify(using algorithm: some JWTAlgorithm) throws { try exp.verifyNotExpired() }
        }
        let signing = JWTKeyCollection()
        let verifying = JWTKeyCollection()
        let ec = ES256PrivateKey()
        let rsa = try JWTKit.Insecure.RSA.PrivateKey(pem: try rsaPEM())
        let hmac = HMACKey(from: Array(repeating: UInt8(5), count: 32))
        await signing.add(ecdsa: ec, kid: "ec")
        await signing.add(rsa: rsa, digestAlgorithm: .sha256, kid: "rs")
        await signing.add(hmac: hmac, digestAlgorithm: .sha256, kid: "hs")
        await verifying.add(ecdsa: ec.publicKey, kid: "ec")
        await verifying.add(rsa: rsa.publicKey, digestAlgorithm: .sha256, kid: "rs")
        await verifying.add(hmac: hmac, digestAlgorithm: .sha256, kid: "hs")
        let jwt = try JWTAuthenticator(
            keys: .init(verifying, ids: ["ec", "rs", "hs"]),
            configuration: .init(algorithms: ["ES256", "RS256", "HS256"], issuers: ["https://issuer.example"]))
        let uncachedJWT = try JWTAuthenticator(
            keys: .init(verifying, ids: ["ec", "rs", "hs"]),
            configuration: .init(algorithms: ["ES256", "RS256", "HS256"], issuers: ["https://issuer.example"], maximumCachedTokens: 0))
        // Signatures take microseconds: fewer iterations.
        let jwtIterations = max(1, iterations / 50)
        for (alg, kid) in [("HS256", "hs"), ("RS256", "rs"), ("ES256", "ec")] {
            let token = try await signing.sign(Claims(), kid: JWKIdentifier(string: kid))
            let credentials = AuthCredentials(headers: ["Authorization": "Bearer \(token)"])
            try await row("JWT \(alg), jwt-kit's bare verify (reference)", iterations: jwtIterations) { _ = try await verifying.verify(token, as: Claims.self) }
            try await row("JWT \(alg), ours, every token new (no cache)", iterations: jwtIterations) { _ = try await uncachedJWT.authenticate(credentials) }
            try await row("JWT \(alg), ours, token seen before (cache)", iterations: jwtIterations) { _ = try await jwt.authenticate(credentials) }
        }

        let other = try ToolID("other:thing")
        await row("RBAC, 50 roles, refused after every rule (50 inherited)") { _ = rbac.decide(deep, tool: other, action: "call") }
        await row("RBAC uncached, 1 role (4 inherited)") { _ = rbac.evaluate(shallow, tool: tool, action: "call") }
        await row("RBAC uncached, refused after every rule (50 inherited)") { _ = rbac.evaluate(deep, tool: other, action: "call") }
    }
}

/// A 2048-bit RSA key in PEM from openssl (installed by `make deps`).
func rsaPEM() throws -> String {
    try capture("/usr/bin/openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
}
