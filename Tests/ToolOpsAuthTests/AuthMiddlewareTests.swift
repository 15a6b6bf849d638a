import ServiceContextModule
import Synchronization
import Testing
import ToolOpsAuth
import ToolOpsCore

/// Audit entries kept for inspection.
final class CollectingAudit: AuditSink {
    let entries = Mutex<[AuditEntry]>([])
    func record(_ entry: AuditEntry) { entries.withLock { $0.append(entry) } }
    var all: [AuditEntry] { entries.withLock { $0 } }
}

/// An authenticator whose provider is down.
struct UnavailableAuthenticator: Authenticator {
    func authenticate(_ credentials: AuthCredentials) async throws(AuthError) -> Identity? {
        guard credentials.bearerToken != nil else { return nil }
        throw AuthError(.providerUnavailable, "JWKS endpoint unreachable")
    }
}

@Suite("Auth middleware")
struct AuthMiddlewareTests {
    let key = "tk_live_middleware_key_0123456789abcdef"

    func pipeline(_ audit: CollectingAudit, anonymous: Bool = false, extra: [any Authenticator] = []) throws -> ToolPipeline {
        let store = MemoryAPIKeyStore([
            APIKeyRecord(id: "k1", digest: APIKeyHasher.sha256.digest(key), principal: "svc-reports", tenant: "acme", roles: ["reader"])
        ])
        let policy = try RBACPolicy(roles: ["reader": .init(allow: [.init("*:search")])], defaultRole: "reader")
        let auth = AuthMiddleware(
            .init(
                authenticator: CompositeAuthenticator(extra + [APIKeyAuthenticator(store: store)]), authorizer: RBACAuthorizer(policy),
                allowAnonymous: anonymous, audit: audit))
        // The tool reports who it was called by, and whether credentials reached it.
        let tool = ToolFunction { call in
            ToolResult([
                "principal": .string(call.identity ?? "-"), "tenant": .string(call.tenant ?? "-"),
                "credentials": .bool(call.context.authCredentials != nil), "method": .string(call.context.authIdentity?.method.rawValue ?? "-"),
            ])
        }
        return ToolPipeline(runner: tool) { auth }
    }

    func call(_ tool: String, headers: [String: String], tenant: String? = nil) throws -> ToolCall {
        var context = ServiceContext.topLevel
        context.authCredentials = AuthCredentials(headers: headers)
        context.toolTenant = tenant
        return ToolCall(tool: try ToolID(tool), context: context)
    }

    @Test func anAllowedCallCarriesTheIdentityAndNotTheCredentials() async throws {
        let audit = CollectingAudit()
        // The caller claims another tenant: the key's tenant wins.
        let result = try await pipeline(audit).run(try call("github:search", headers: ["x-api-key": key], tenant: "evil-corp"))
        #expect(result.value == ["principal": "svc-reports", "tenant": "acme", "credentials": false, "method": "api_key"])
        let entry = try #require(audit.all.first)
        #expect(entry.allowed && entry.principal == "svc-reports" && entry.tool.description == "github:search" && entry.action == "call")
        #expect(entry.reason == "allowed by role reader (*:search)")
    }

    @Test func aDeniedCallIsForbiddenAndAudited() async throws {
        let audit = CollectingAudit()
        let error = await #expect(throws: ToolOpsError.self) {
            try await pipeline(audit).run(try call("github:delete_repo", headers: ["X-API-Key": key]))
        }
        #expect(error?.code == .forbidden)
        #expect(error.map { !"\($0)".contains(key) } == true)
        #expect(audit.all.map(\.allowed) == [false])
        #expect(audit.all.first?.reason == "no role or scope allows it")
    }

    @Test func missingAndWrongCredentialsAreUnauthenticated() async throws {
        let audit = CollectingAudit()
        let missing = await #expect(throws: ToolOpsError.self) { try await pipeline(audit).run(try call("github:search", headers: [:])) }
        #expect(missing?.code == .unauthenticated)
        let wrong = "tk_live_not_the_key_00000000000000000"
        let invalid = await #expect(throws: ToolOpsError.self) { try await pipeline(audit).run(try call("github:search", headers: ["X-API-Key": wrong])) }
        #expect(invalid?.code == .unauthenticated)
        #expect(audit.all.map(\.allowed) == [false, false])
        #expect(audit.all.allSatisfy { $0.principal == nil })
        #expect(!audit.all.map(\.reason).joined().contains(wrong))
    }

    @Test func anonymousCallersAreAuthorizedLikeAnyoneWhenAllowed() async throws {
        let audit = CollectingAudit()
        // No roles: the default role (reader) applies.
        let result = try await pipeline(audit, anonymous: true).run(try call("jira:search", headers: [:]))
        #expect(result.value["principal"] == "anonymous")
        await #expect(throws: ToolOpsError.self) { try await pipeline(audit, anonymous: true).run(try call("jira:create", headers: [:])) }
    }

    @Test func anUnavailableProviderIsNeitherYesNorNo() async throws {
        let audit = CollectingAudit()
        let pipeline = try pipeline(audit, extra: [UnavailableAuthenticator()])
        // The JWT provider is down, but an API key still gets through.
        _ = try await pipeline.run(try call("github:search", headers: ["X-API-Key": key, "Authorization": "Bearer t"]))
        let error = await #expect(throws: ToolOpsError.self) { try await pipeline.run(try call("github:search", headers: ["Authorization": "Bearer t"])) }
        #expect(error?.code == .authenticationUnavailable)
        #expect(ToolOutcome(error: try #require(error)) == .unauthenticated)
    }
}
