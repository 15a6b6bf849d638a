import Synchronization
import Testing
import ToolOpsAuth
import ToolOpsCore
import ToolOpsTesting

/// A store that counts lookups and can be switched off.
final class CountingStore: APIKeyStore {
    let inner: MemoryAPIKeyStore
    let lookups = Mutex(0)
    let down = Mutex(false)

    init(_ records: [APIKeyRecord]) { inner = MemoryAPIKeyStore(records) }

    struct Down: Error, CustomStringConvertible { var description: String { "connection refused" } }

    func record(lookupID: String) async throws -> APIKeyRecord? {
        lookups.withLock { $0 += 1 }
        if down.withLock({ $0 }) { throw Down() }
        return try await inner.record(lookupID: lookupID)
    }
    func put(_ record: APIKeyRecord) async throws { try await inner.put(record) }
    func revoke(id: String) async throws -> Bool { try await inner.revoke(id: id) }
}

@Suite("API keys")
struct APIKeyTests {
    let key = "tk_live_0123456789abcdefghijklmnopqrstuv"
    let hasher = APIKeyHasher.sha256

    func record(expiresAt: ClockInstant? = nil) -> APIKeyRecord {
        APIKeyRecord(id: "key-1", digest: hasher.digest(key), principal: "svc-reports", tenant: "acme", roles: ["reader"], expiresAt: expiresAt)
    }

    @Test func aValidKeyIsAnIdentityWhateverTheHeadersCase() async throws {
        let authenticator = APIKeyAuthenticator(store: MemoryAPIKeyStore([record()]))
        for header in ["X-API-Key", "x-api-key", "X-Api-Key"] {
            let identity = try await authenticator.authenticate(AuthCredentials(headers: [header: key]))
            #expect(identity?.principal == "svc-reports")
            #expect(identity?.tenant == "acme")
            #expect(identity?.roles == ["reader"])
            #expect(identity?.method == .apiKey)
            #expect(identity?.claims["key_id"] == "key-1")
        }
    }

    @Test func noHeaderIsNotThisAuthenticatorsBusiness() async throws {
        let authenticator = APIKeyAuthenticator(store: MemoryAPIKeyStore([record()]))
        #expect(try await authenticator.authenticate(AuthCredentials(headers: ["Authorization": "Bearer x"])) == nil)
        #expect(try await authenticator.authenticate(AuthCredentials(headers: ["X-API-Key": "  "])) == nil)
    }

    @Test func wrongExpiredAndOversizedKeysAreRefusedWithoutShowingThem() async throws {
        let clock = ManualClock()
        let authenticator = APIKeyAuthenticator(
            store: MemoryAPIKeyStore([record(expiresAt: clock.now + .seconds(10))]), clock: clock)
        let wrong = "tk_live_wrong_but_plausible_0000000000"
        await expectRefusal(authenticator, wrong, .invalidCredentials, hiding: wrong)
        let huge = String(repeating: "k", count: 600)
        await expectRefusal(authenticator, huge, .malformed, hiding: huge)
        #expect(try await authenticator.authenticate(AuthCredentials(headers: ["X-API-Key": key])) != nil)
        clock.advance(by: .seconds(11))
        await expectRefusal(authenticator, key, .expired, hiding: key)  // also once cached
    }

    func expectRefusal(_ authenticator: APIKeyAuthenticator, _ presented: String, _ reason: AuthError.Reason, hiding secret: String) async {
        do {
            _ = try await authenticator.authenticate(AuthCredentials(headers: ["X-API-Key": presented]))
            Issue.record("\(reason) expected")
        } catch {
            #expect(error.reason == reason)
            #expect(!"\(error)".contains(secret) && !"\(error.toolOpsError)".contains(secret))
        }
    }

    @Test func aVerifiedKeyIsServedFromTheCacheAndSurvivesAStoreOutage() async throws {
        let store = CountingStore([record()])
        let authenticator = APIKeyAuthenticator(store: store)
        for _ in 0..<5 { _ = try await authenticator.authenticate(AuthCredentials(headers: ["X-API-Key": key])) }
        #expect(store.lookups.withLock { $0 } == 1)
        store.down.withLock { $0 = true }
        #expect(try await authenticator.authenticate(AuthCredentials(headers: ["X-API-Key": key]))?.principal == "svc-reports")
        // An unknown key cannot be judged while the store is down: unavailable, not invalid.
        do {
            _ = try await authenticator.authenticate(AuthCredentials(headers: ["X-API-Key": "tk_other_key_000000000000000"]))
            Issue.record("expected providerUnavailable")
        } catch {
            #expect(error.reason == .providerUnavailable)
            #expect(error.toolOpsError.code == .authenticationUnavailable)
        }
    }

    @Test func revokingAKeyDropsItsCachedVerdictAtOnce() async throws {
        let store = MemoryAPIKeyStore([record()])
        let authenticator = APIKeyAuthenticator(store: store)
        #expect(try await authenticator.authenticate(AuthCredentials(headers: ["X-API-Key": key])) != nil)
        #expect(authenticator.cachedKeys == 1)
        #expect(try await store.revoke(id: "key-1"))
        #expect(authenticator.cachedKeys == 0)
        await expectRefusal(authenticator, key, .invalidCredentials, hiding: key)
    }

    @Test func theCacheStaysWithinItsBound() async throws {
        let keys = (0..<50).map { "tk_bulk_key_number_\($0)_padding_padding" }
        let store = MemoryAPIKeyStore(keys.enumerated().map { APIKeyRecord(id: "k\($0.offset)", digest: hasher.digest($0.element), principal: "p\($0.offset)") })
        let authenticator = APIKeyAuthenticator(store: store, configuration: .init(maximumCachedKeys: 10))
        for key in keys { _ = try await authenticator.authenticate(AuthCredentials(headers: ["X-API-Key": key])) }
        #expect(authenticator.cachedKeys <= 10)
    }

    @Test func aPepperedDigestDiffersAndStillVerifies() async throws {
        let pepper = Array(repeating: UInt8(7), count: 32)
        let peppered = try APIKeyHasher.hmacSHA256(pepper: pepper)
        #expect(peppered.digest(key) != APIKeyHasher.sha256.digest(key))
        #expect(throws: AuthError.self) { try APIKeyHasher.hmacSHA256(pepper: [1, 2, 3]) }
        let store = MemoryAPIKeyStore([APIKeyRecord(id: "k", digest: peppered.digest(key), principal: "p")])
        #expect(try await APIKeyAuthenticator(store: store, hasher: peppered).authenticate(AuthCredentials(headers: ["X-API-Key": key])) != nil)
        // The same store read without the pepper knows no such key.
        await expectRefusal(APIKeyAuthenticator(store: store), key, .invalidCredentials, hiding: key)
    }

    @Test func digestsCompareInConstantTimeAndByValue() {
        let a = hasher.digest("a")
        #expect(APIKeyHasher.constantTimeEquals(a, a))
        #expect(!APIKeyHasher.constantTimeEquals(a, hasher.digest("b")))
        #expect(!APIKeyHasher.constantTimeEquals(a, Array(a.prefix(31))))
        #expect(APIKeyHasher.lookupID(a).count == 16)
    }

    @Test func credentialsNeverDescribeTheirValues() {
        let credentials = AuthCredentials(headers: ["X-API-Key": key, "Authorization": "Bearer secret-token"])
        #expect(!"\(credentials)".contains(key) && !"\(credentials)".contains("secret-token"))
        #expect(credentials.bearerToken == "secret-token")
        #expect(AuthCredentials(headers: ["authorization": "BEARER  t "]).bearerToken == "t")
        #expect(AuthCredentials(headers: ["authorization": "Basic abc"]).bearerToken == nil)
    }
}
