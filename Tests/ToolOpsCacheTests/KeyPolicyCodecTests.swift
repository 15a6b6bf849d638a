import Crypto
import ServiceContextModule
import Testing
import ToolOpsCore
@testable import ToolOpsCache

func call(
    _ tool: String = "search:web", _ arguments: JSONValue = ["q": "swift"], tags: Set<String> = [],
    tenant: String? = nil, identity: String? = nil
) throws -> ToolCall {
    var context = ServiceContext.topLevel
    context.toolTenant = tenant
    context.toolIdentity = identity
    return ToolCall(tool: try ToolID(tool), arguments: arguments, tags: tags, context: context)
}

/// The keyer's digest: swift-crypto's SHA-256, fed from strings and printed as hex by us.
@Suite("SHA-256")
struct SHA256Tests {
    func digest(_ text: String) -> String { SHA256.hex(of: text) }

    @Test func knownVectors() {
        #expect(digest("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(digest(String(repeating: "a", count: 1_000_000))
            == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}

@Suite("Cache keys and policy")
struct CacheKeyPolicyTests {
    @Test func keysAreCanonicalFullLengthAndScoped() throws {
        let keyer = CacheKeyer()
        let a = try keyer.key(for: call("search:web", ["q": "swift", "n": 10], tenant: "t1"))
        let b = try keyer.key(for: call("search:web", ["n": 10.0, "q": "swift"], tenant: "t1"))
        #expect(a == b)  // argument order and number spelling do not matter
        #expect(a.value.hasPrefix("search:web:"))
        #expect(a.value.count == "search:web:".count + 64)
        // Tenants never share (the default scope); principals do unless asked.
        #expect(try keyer.key(for: call("search:web", ["q": "swift", "n": 10], tenant: "t2")) != a)
        #expect(try keyer.key(for: call("search:web", ["q": "swift", "n": 10], tenant: "t1", identity: "bob")) == a)
        let perPrincipal = CacheKeyer(scope: [.tenant, .principal])
        #expect(try perPrincipal.key(for: call(tenant: "t1", identity: "bob")) != perPrincipal.key(for: call(tenant: "t1", identity: "amy")))
        // No tenant is not the same as an empty-named shared scope.
        #expect(try CacheKeyer(scope: .shared).key(for: call(tenant: "t1")) == CacheKeyer(scope: .shared).key(for: call(tenant: "t2")))
        #expect(try keyer.key(for: call()) != CacheKeyer(scope: .shared).key(for: call()))
        // Different arguments, tools and versions differ.
        #expect(try keyer.key(for: call("search:web", ["q": "swiftly"], tenant: "t1")) != a)
        #expect(try keyer.key(for: call("search:news", ["q": "swift", "n": 10], tenant: "t1")) != a)
        let versioned = CacheKeyer(versions: [(try ToolPattern("search:*"), "2")])
        #expect(try versioned.key(for: call("search:web", ["q": "swift", "n": 10], tenant: "t1")) != a)
        // Arguments that cannot be encoded canonically are a typed error.
        #expect(throws: ToolOpsError.self) { try keyer.key(for: call("search:web", ["x": .number(.nan)])) }
    }

    @Test func customKeysAreValidated() {
        #expect(throws: ToolOpsError.self) { try CacheKey("") }
        #expect(throws: ToolOpsError.self) { try CacheKey("has space") }
        #expect(throws: ToolOpsError.self) { try CacheKey("line\nbreak") }
        #expect(throws: ToolOpsError.self) { try CacheKey(String(repeating: "k", count: 513)) }
        #expect((try? CacheKey(String(repeating: "k", count: 512))) != nil)
    }

    @Test func policyRules() throws {
        let policy = try CachePolicy()
        #expect(policy.shouldCache(try call()))
        for tag in ["write", "DANGER", "Unsafe", "mutation", "delete"] { #expect(!policy.shouldCache(try call(tags: [tag]))) }
        let customSkip: CachePolicy.SkipRule = { $0.tool.namespace == "admin" }
        let permissive = try CachePolicy(allowUnsafe: true, skip: [customSkip])
        #expect(permissive.shouldCache(try call(tags: ["write"])))
        // allowUnsafe never bypasses custom rules (a Go bug).
        #expect(!permissive.shouldCache(try call("admin:purge", tags: ["write"])))
        #expect(!permissive.shouldCache(try call("admin:list")))

        let ttls = try CachePolicy(
            defaultTTL: .seconds(60), maxTTL: .seconds(600),
            ttls: [(try ToolPattern("search:*"), .seconds(120)), (try ToolPattern("search:web"), .seconds(3600))])
        #expect(ttls.ttl(for: try ToolID("other:x")) == .seconds(60))
        #expect(ttls.ttl(for: try ToolID("search:news")) == .seconds(120))
        #expect(ttls.ttl(for: try ToolID("search:web")) == .seconds(600))  // capped at maxTTL
        let jittered = try CachePolicy(defaultTTL: .seconds(100), jitter: 0.2)
        let ttls200 = try (0..<200).map { _ in jittered.jitteredTTL(for: try ToolID("a:b")) }
        #expect(ttls200.allSatisfy { $0 <= .seconds(100) && $0 >= .seconds(80) })
        // Spread over the whole range, not a constant (P(all 200 above 82 s) ≈ 0.9^200 ≈ 1e-9).
        #expect(Set(ttls200).count > 100)
        #expect(try #require(ttls200.min()) < .seconds(82) && (try #require(ttls200.max())) > .seconds(98))
    }

    @Test func nonsenseConfigurationIsRejected() {
        #expect(throws: ToolOpsError.self) { try CachePolicy(defaultTTL: .zero) }
        #expect(throws: ToolOpsError.self) { try CachePolicy(defaultTTL: .seconds(10), maxTTL: .seconds(5)) }
        #expect(throws: ToolOpsError.self) { try CachePolicy(jitter: 0.9) }
        #expect(throws: ToolOpsError.self) { try CachePolicy(maximumEntryBytes: 0) }
        #expect(throws: ToolOpsError.self) { try CachePolicy(negativeTTL: .seconds(600)) }
        #expect(throws: ToolOpsError.self) { try CachePolicy(refreshAhead: 1.5) }
    }
}

@Suite("Cache entry codec")
struct CacheEntryCodecTests {
    let entry = CacheEntry(
        result: ToolResult(["items": [1, "two", ["three": 3.5]], "ok": true], metadata: ["source": "api"]),
        tool: try! ToolID("search:web"), tags: ["news", "public"],
        storedAt: ClockInstant(nanoseconds: 1_000), freshUntil: ClockInstant(nanoseconds: 5_000), expiresAt: ClockInstant(nanoseconds: 9_000))

    @Test func roundTrips() throws {
        let bytes = try CacheEntryCodec.encode(entry)
        #expect(try CacheEntryCodec.decode(bytes) == entry)
        let negative = CacheEntry(result: ToolResult(.null), tool: entry.tool, storedAt: entry.storedAt, freshUntil: entry.freshUntil, failure: "boom")
        #expect(try CacheEntryCodec.decode(try CacheEntryCodec.encode(negative)) == negative)
        #expect(try CacheEntryCodec.header(bytes).tags.sorted() == ["news", "public"])
    }

    @Test func truncatedOrCorruptBytesAreTypedErrors() throws {
        let bytes = try CacheEntryCodec.encode(entry)
        for length in 0..<bytes.count {
            #expect(throws: ToolOpsError.self) { try CacheEntryCodec.decode(Array(bytes[..<length])) }
        }
        #expect(throws: ToolOpsError.self) { try CacheEntryCodec.decode(bytes + [0]) }
        // Every byte, two flips each (low and high bit): a typed error, or a *different* entry —
        // a corrupt byte is never silently the original, and no other error type escapes.
        var rejected = 0
        for index in bytes.indices {
            for mask: UInt8 in [0x01, 0x80] {
                var garbage = bytes
                garbage[index] ^= mask
                do {
                    #expect(try CacheEntryCodec.decode(garbage) != entry, "flip \(mask) at \(index) decoded as the original")
                } catch {
                    #expect(error.code == .invalidInput)
                    rejected += 1
                }
                if index < CacheEntryCodec.magic.count {
                    #expect(throws: ToolOpsError.self) { try CacheEntryCodec.decode(garbage) }
                }
            }
        }
        #expect(rejected >= 2 * CacheEntryCodec.magic.count)
    }
}
