import Foundation
import ServiceContextModule
import Testing
import ToolOpsAuth
import ToolOpsCore
import ToolOpsResilience
import ToolOpsTestSupport

@Suite("File API keys and per-identity limits")
struct FileAPIKeyStoreTests {
    let key = "tk_live_file_store_key_0123456789abcdef"

    @Test func recordsSurviveAcrossStoresAndRevocationRemovesThem() async throws {
        let directory = temporaryDirectory("api-keys")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let writer = try FileAPIKeyStore(directory: directory)
        let record = APIKeyRecord(
            id: "k-1", digest: APIKeyHasher.sha256.digest(key), principal: "svc", tenant: "acme", roles: ["reader"], scopes: ["s"],
            expiresAt: ClockInstant(nanoseconds: 4_000_000_000_000_000_000), metadata: ["owner": "ops"])
        try await writer.put(record)
        // Another store on the same directory (another process) reads it whole.
        let reader = try FileAPIKeyStore(directory: directory)
        #expect(try await reader.record(lookupID: record.lookupID) == record)
        let files = FileManager.default.subpaths(atPath: directory) ?? []
        #expect(files == ["\(record.lookupID).json"])
        #expect(!(try String(contentsOfFile: "\(directory)/\(files[0])", encoding: .utf8)).contains(key))

        let authenticator = APIKeyAuthenticator(store: writer)
        #expect(try await authenticator.authenticate(AuthCredentials(headers: ["X-API-Key": key])) != nil)
        #expect(try await writer.revoke(id: "k-1"))
        #expect(authenticator.cachedKeys == 0)
        #expect(try await reader.record(lookupID: record.lookupID) == nil)
        #expect(try await writer.revoke(id: "k-1") == false)
    }

    @Test func aCorruptFileIsAStoreFailureAndOddLookupIDsNameNothing() async throws {
        let directory = temporaryDirectory("api-keys-corrupt")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try FileAPIKeyStore(directory: directory)
        let lookupID = APIKeyHasher.lookupID(APIKeyHasher.sha256.digest(key))
        try "{\"id\": 3".write(toFile: "\(directory)/\(lookupID).json", atomically: true, encoding: .utf8)
        do {
            _ = try await APIKeyAuthenticator(store: store).authenticate(AuthCredentials(headers: ["X-API-Key": key]))
            Issue.record("a corrupt record must not authenticate")
        } catch {
            #expect(error.reason == .providerUnavailable)
        }
        for hostile in ["../../etc/passwd", "", "ABCDEF", String(repeating: "a", count: 100)] {
            #expect(try await store.record(lookupID: hostile) == nil)
        }
    }

    /// Rate limits keyed by identity count the authenticated principal, and a caller cannot
    /// escape its tenant's limit by claiming another tenant.
    @Test func limitsKeyOnWhoWasAuthenticated() async throws {
        let other = "tk_live_other_principal_key_000000000"
        let store = MemoryAPIKeyStore([
            APIKeyRecord(id: "a", digest: APIKeyHasher.sha256.digest(key), principal: "alice", tenant: "acme"),
            APIKeyRecord(id: "b", digest: APIKeyHasher.sha256.digest(other), principal: "bob", tenant: "acme"),
        ])
        let limit = try RateLimit(rate: 1, per: .seconds(3600), burst: 2)
        let pipeline = try ToolPipeline(runner: ToolFunction { _ in ToolResult(.null) }) {
            AuthMiddleware(.init(authenticator: APIKeyAuthenticator(store: store), audit: nil))
            try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: limit, key: .identity)]))
        }
        let tenantPipeline = try ToolPipeline(runner: ToolFunction { _ in ToolResult(.null) }) {
            AuthMiddleware(.init(authenticator: APIKeyAuthenticator(store: store), audit: nil))
            try RateLimitMiddleware(.init(rules: [RateLimitRule(limit: limit, key: .tenant)]))
        }
        func call(_ presented: String, tenant: String? = nil) throws -> ToolCall {
            var context = ServiceContext.topLevel
            context.authCredentials = AuthCredentials(headers: ["X-API-Key": presented])
            context.toolTenant = tenant
            return ToolCall(tool: try ToolID("web:search"), context: context)
        }
        for _ in 0..<2 { _ = try await pipeline.run(try call(key)) }
        await #expect(throws: ToolOpsError.self) { try await pipeline.run(try call(key)) }
        _ = try await pipeline.run(try call(other))  // bob has his own bucket

        for _ in 0..<2 { _ = try await tenantPipeline.run(try call(key, tenant: "tenant-\(UInt32.random(in: 0...UInt32.max))")) }
        // Claiming yet another tenant does not help: the key's tenant (acme) is the bucket.
        let error = await #expect(throws: ToolOpsError.self) { try await tenantPipeline.run(try call(other, tenant: "someone-else")) }
        #expect(error?.code == .rateLimited)
    }
}
