import Crypto
import JWTKit
import Synchronization
import ToolOpsCore

/// Authenticates `Authorization: Bearer <JWT>` with jwt-kit, strictly.
///
/// Before any key is touched, the header is read and checked: its `alg` must be in
/// ``Configuration/algorithms`` (`none` can never be), its `kid` must name a configured key —
/// an unknown `kid` is refused, never tried against a default key, and a token without `kid`
/// is accepted only when exactly one key has no id — and the key's own algorithm must be the
/// token's (an HMAC key never verifies an RS/ES token, whatever the header says). The key's
/// jwt-kit algorithm then checks the signature over the token's signing input (the token is
/// split and decoded once, here). The claims are checked with ``Configuration/leeway``: `exp`
/// (required unless ``Configuration/requireExpiry`` is off), `nbf`, `iat` not in the future,
/// `iss` in ``Configuration/issuers``, `aud` (a string or an array) meeting ``Configuration/audiences``.
///
/// A verified token is cached (keyed by its SHA-256, never the token) until its `exp`, so a
/// client repeating its token costs one hash and a lookup.
///
/// Failures: no bearer token → `nil`; oversized or undecodable → `malformed`; unknown `kid`,
/// disallowed `alg`, bad signature, wrong `iss`/`aud` → `invalidCredentials`; past `exp` →
/// `expired`; before `nbf` → `notYetValid`. Messages never contain the token.
public final class JWTAuthenticator: Authenticator {
    public struct Configuration: Sendable {
        /// Accepted `alg` values. Defaults to RS256, ES256 and EdDSA. HS* must be listed to be used.
        public var algorithms: Set<String>
        /// Accepted issuers; empty accepts any (not recommended).
        public var issuers: Set<String>
        /// The token's `aud` must contain one of these; empty skips the check.
        public var audiences: Set<String>
        /// Clock skew allowed on `exp`, `nbf` and `iat`. Defaults to 60 s.
        public var leeway: Duration
        /// Whether a token without `exp` is refused. Defaults to `true`.
        public var requireExpiry: Bool
        /// Claim names. Defaults: `sub`, none, `roles`, `scope` (a space-separated string or an array).
        public var principalClaim: String
        public var tenantClaim: String?
        public var rolesClaim: String?
        public var scopeClaim: String?
        /// Longer tokens are refused unread. Defaults to 16 KiB.
        public var maximumTokenLength: Int
        /// Verified tokens cached at most (0: none). Defaults to 10,000.
        public var maximumCachedTokens: Int

        public init(
            algorithms: Set<String> = ["RS256", "ES256", "EdDSA"], issuers: Set<String> = [], audiences: Set<String> = [],
            leeway: Duration = .seconds(60), requireExpiry: Bool = true, principalClaim: String = "sub", tenantClaim: String? = nil,
            rolesClaim: String? = "roles", scopeClaim: String? = "scope", maximumTokenLength: Int = 16 * 1024, maximumCachedTokens: Int = 10_000
        ) {
            self.algorithms = algorithms
            self.issuers = issuers
            self.audiences = audiences
            self.leeway = leeway
            self.requireExpiry = requireExpiry
            self.principalClaim = principalClaim
            self.tenantClaim = tenantClaim
            self.rolesClaim = rolesClaim
            self.scopeClaim = scopeClaim
            self.maximumTokenLength = maximumTokenLength
            self.maximumCachedTokens = maximumCachedTokens
        }
    }

    /// The keys a token may be verified with.
    public struct Keys: Sendable {
        let collection: JWTKeyCollection
        /// Key ids configured; a token's `kid` must be one of them.
        let ids: Set<String>
        /// Whether one key has no id (the only one a `kid`-less token may use).
        let hasAnonymousKey: Bool

        /// Keys added to `collection` with these ids (`anonymous`: one was added without an id).
        public init(_ collection: JWTKeyCollection, ids: Set<String>, anonymous: Bool = false) {
            self.collection = collection
            self.ids = ids
            self.hasAnonymousKey = anonymous
        }
    }

    struct Cached {
        var identity: Identity
        var expiresAt: Int64?
    }

    enum Source: Sendable {
        case fixed(Keys)
        case jwks(JWKSKeySource)
    }

    public let configuration: Configuration
    let source: Source
    let clock: any ToolOpsClock
    /// The leeway in nanoseconds, kept within half the `Int64` range so that adding it to a
    /// token time cannot overflow.
    let leeway: Int64
    private let cache = Mutex<[SHA256Digest: Cached]>([:])
    /// Each key's verifier, asked of the key collection once: by collection (a rotated key set
    /// may reuse an id) and key id ("" for the anonymous key).
    private let verifiers = Mutex<[VerifierSlot: any JWTAlgorithm]>([:])

    struct VerifierSlot: Hashable {
        let collection: ObjectIdentifier
        let kid: String
    }

    /// - Parameter clock: a wall clock (token times are Unix seconds). Defaults to ``WallClock``.
    public convenience init(keys: Keys, configuration: Configuration = .init(), clock: any ToolOpsClock = WallClock()) throws(ToolOpsError) {
        try self.init(source: .fixed(keys), configuration: configuration, clock: clock)
    }

    /// Keys from a JWKS endpoint (rotated, refreshed, served stale for a bounded time).
    public convenience init(jwks: JWKSKeySource, configuration: Configuration = .init(), clock: any ToolOpsClock = WallClock()) throws(ToolOpsError) {
        try self.init(source: .jwks(jwks), configuration: configuration, clock: clock)
    }

    init(source: Source, configuration: Configuration, clock: any ToolOpsClock) throws(ToolOpsError) {
        var configuration = configuration
        configuration.algorithms.remove("none")
        try requireAuthConfiguration(!configuration.algorithms.isEmpty, "a JWT authenticator needs at least one algorithm")
        self.source = source
        self.configuration = configuration
        self.clock = clock
        self.leeway = min(max(configuration.leeway.nanosecondsClamped, Int64.min / 2), Int64.max / 2)
    }

    public func authenticate(_ credentials: AuthCredentials) async throws(AuthError) -> Identity? {
        guard let token = credentials.bearerToken else { return nil }
        guard token.utf8.count <= configuration.maximumTokenLength else {
            throw AuthError(.malformed, "bearer token longer than \(configuration.maximumTokenLength) bytes")
        }
        let now = clock.now.nanoseconds
        let fingerprint = SHA256.hash(data: Array(token.utf8))
        if let cached = cache.withLock({ $0[fingerprint] }) {
            if let expiry = cached.expiresAt, now >= expiry &+ leeway {
                _ = cache.withLock { $0.removeValue(forKey: fingerprint) }
                throw AuthError(.expired, "token expired")
            }
            return cached.identity
        }

        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = Base64URL.decode(parts[0]), let payloadBytes = Base64URL.decode(parts[1]) else {
            throw AuthError(.malformed, "bearer token is not a JWT")
        }
        let header: JSONValue
        let claims: JSONValue
        do {
            header = try JSONValue(parsing: headerBytes, limits: .init(maximumDepth: 4, maximumBytes: 4096))
            claims = try JSONValue(parsing: payloadBytes, limits: .init(maximumDepth: 16, maximumBytes: configuration.maximumTokenLength))
        } catch {
            throw AuthError(.malformed, "the token's header or claims are not JSON")
        }
        guard let algorithm = header["alg"]?.stringValue, configuration.algorithms.contains(algorithm) else {
            throw AuthError(.invalidCredentials, "token algorithm \(Self.clip(header["alg"]?.stringValue ?? "(none)")) is not allowed")
        }
        let kid = header["kid"]?.stringValue
        let keys: Keys
        switch source {
        case .fixed(let fixed): keys = fixed
        case .jwks(let jwks): keys = try await jwks.keys(for: kid)
        }
        if let kid {
            guard keys.ids.contains(kid) else { throw AuthError(.invalidCredentials, "token signed with an unknown key id \(Self.clip(kid))") }
        } else {
            guard keys.hasAnonymousKey else { throw AuthError(.invalidCredentials, "token has no key id") }
        }
        // The signature, checked by the key's own jwt-kit algorithm over the signing input
        // (header.payload as sent). The token was split and decoded once, above; jwt-kit's
        // parser would split, decode and JSON-decode it all again.
        guard let signature = Base64URL.decode(parts[2]) else { throw AuthError(.malformed, "bearer token is not a JWT") }
        let slot = VerifierSlot(collection: ObjectIdentifier(keys.collection), kid: kid ?? "")
        var verifier = verifiers.withLock { $0[slot] }
        if verifier == nil {
            do {
                let found = try await keys.collection.getKey(for: kid.map { JWKIdentifier(string: $0) }, alg: algorithm)
                verifiers.withLock { known in
                    if known.count >= 1024 { known.removeAll() }  // rotated sets leave old entries behind
                    known[slot] = found
                }
                verifier = found
            } catch {
                throw AuthError(.invalidCredentials, "token signed with an unknown key")
            }
        }
        guard let verifier else { throw AuthError(.invalidCredentials, "token signed with an unknown key") }
        // The key's own algorithm must be the token's: an HMAC key never verifies an RS/ES token.
        guard verifier.name == algorithm else {
            throw AuthError(.invalidCredentials, "token algorithm \(algorithm) does not match its key's (\(verifier.name))")
        }
        let signingInput = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        let valid: Bool
        do {
            valid = try verifier.verify(signature, signs: signingInput)
        } catch {
            valid = false
        }
        guard valid else { throw AuthError(.invalidCredentials, "token signature not valid") }
        let identity = try check(claims, now: now)
        let expiry = claims["exp"].flatMap(Self.seconds).map { $0 &* 1_000_000_000 }
        let maximum = configuration.maximumCachedTokens
        if maximum > 0 {
            cache.withLock { cache in
                // Full: start over (verified tokens are only a cache; each costs one verification to regain).
                if cache.count >= maximum { cache.removeAll(keepingCapacity: true) }
                cache[fingerprint] = Cached(identity: identity, expiresAt: expiry)
            }
        }
        return identity
    }

    /// The registered claims checked, the identity read.
    func check(_ claims: JSONValue, now: Int64) throws(AuthError) -> Identity {
        if let exp = claims["exp"] {
            guard let seconds = Self.seconds(exp) else { throw AuthError(.malformed, "exp is not a number") }
            if now >= seconds &* 1_000_000_000 &+ leeway { throw AuthError(.expired, "token expired") }
        } else if configuration.requireExpiry {
            throw AuthError(.invalidCredentials, "token has no exp")
        }
        if let nbf = claims["nbf"] {
            guard let seconds = Self.seconds(nbf) else { throw AuthError(.malformed, "nbf is not a number") }
            if now &+ leeway < seconds &* 1_000_000_000 { throw AuthError(.notYetValid, "token not valid yet") }
        }
        if let iat = claims["iat"] {
            guard let seconds = Self.seconds(iat) else { throw AuthError(.malformed, "iat is not a number") }
            if now &+ leeway < seconds &* 1_000_000_000 { throw AuthError(.notYetValid, "token issued in the future") }
        }
        if !configuration.issuers.isEmpty {
            guard let issuer = claims["iss"]?.stringValue, configuration.issuers.contains(issuer) else {
                throw AuthError(.invalidCredentials, "token issuer not accepted")
            }
        }
        if !configuration.audiences.isEmpty {
            let audiences = Self.strings(claims["aud"])
            guard audiences.contains(where: configuration.audiences.contains) else {
                throw AuthError(.invalidCredentials, "token audience not accepted")
            }
        }
        guard let principal = claims[configuration.principalClaim]?.stringValue, !principal.isEmpty else {
            throw AuthError(.invalidCredentials, "token has no \(configuration.principalClaim) claim")
        }
        var identity = Identity(principal: principal, method: .jwt)
        if let name = configuration.tenantClaim { identity.tenant = claims[name]?.stringValue }
        if let name = configuration.rolesClaim { identity.roles = Self.strings(claims[name]) }
        if let name = configuration.scopeClaim {
            identity.scopes = Self.strings(claims[name]).flatMap { $0.split(separator: " ").map(String.init) }
        }
        if let issuer = claims["iss"]?.stringValue { identity.claims["iss"] = issuer }
        if let exp = claims["exp"].flatMap(Self.seconds) { identity.expiresAt = ClockInstant(nanoseconds: exp &* 1_000_000_000) }
        return identity
    }

    static func seconds(_ value: JSONValue) -> Int64? {
        if let integer = value.int64Value { return integer }
        if let double = value.doubleValue, double.isFinite, abs(double) < 9e15 { return Int64(double) }
        return nil
    }

    static func strings(_ value: JSONValue?) -> [String] {
        switch value {
        case .string(let text)?: return [text]
        case .array(let values)?: return values.compactMap(\.stringValue)
        default: return []
        }
    }

    static func clip(_ text: String) -> String { text.count > 40 ? String(text.prefix(40)) + "…" : text }

    /// Verified tokens cached now.
    public var cachedTokens: Int { cache.withLock { $0.count } }
}

/// Base64url without padding (RFC 7515), decoded strictly.
enum Base64URL {
    static func decode(_ text: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count * 3 / 4)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in text.utf8 {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            default: return nil
            }
            buffer = buffer << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        return bits >= 6 ? nil : out
    }
}

func requireAuthConfiguration(_ condition: Bool, _ message: @autoclosure () -> String) throws(ToolOpsError) {
    if !condition { throw ToolOpsError(.invalidConfiguration, message()) }
}
