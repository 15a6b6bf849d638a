import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import ToolOpsCore

/// Authenticates opaque `Authorization: Bearer` tokens by asking the authorization server
/// (OAuth 2.0 Token Introspection, RFC 7662).
///
/// - The token is POSTed as `application/x-www-form-urlencoded` with `token_type_hint`; the
///   client authenticates with `client_secret_basic` (HTTP Basic over the form-encoded id and
///   secret, RFC 6749 §2.3.1) or `client_secret_post` (both in the form).
/// - `active: false` → ``AuthError/Reason/inactive``; an `exp` in the past → `expired`; an
///   `nbf` in the future → `notYetValid`; an issuer or audience not accepted → `invalidCredentials`.
/// - Verdicts are cached in an ``IntrospectionCache`` keyed by the token's SHA-256 (never the
///   token): an active token no longer than its `exp` and ``Configuration/maximumPositiveTTL``,
///   a refusal for ``Configuration/negativeTTL``. With a Redis cache the replicas share them.
/// - Concurrent calls with the same token share one request (per replica).
/// - The endpoint down, slow (``Configuration/timeout``), answering other than 200, with more
///   than ``Configuration/maximumResponseBytes`` or with no `active` member →
///   ``AuthError/Reason/providerUnavailable``: neither yes nor no, and not cached.
public final class IntrospectionAuthenticator: Authenticator {
    /// How the client authenticates to the introspection endpoint.
    public enum ClientAuthentication: String, Sendable {
        /// `Authorization: Basic` (RFC 6749 §2.3.1), the default.
        case clientSecretBasic = "client_secret_basic"
        /// `client_id` and `client_secret` in the form body.
        case clientSecretPost = "client_secret_post"
    }

    public struct Configuration: Sendable, CustomStringConvertible {
        /// The introspection endpoint (https in production).
        public var url: String
        public var clientID: String
        /// Never printed (``description`` shows its length only).
        public var clientSecret: String
        public var clientAuthentication: ClientAuthentication
        /// `token_type_hint` sent with each token. Defaults to `access_token`.
        public var tokenTypeHint: String?
        /// Bound on one request. Defaults to 2 s.
        public var timeout: Duration
        /// Larger responses are refused. Defaults to 64 KiB.
        public var maximumResponseBytes: Int
        /// Longer tokens are refused unsent. Defaults to 16 KiB.
        public var maximumTokenLength: Int
        /// The longest an active verdict is kept (and never past the token's `exp`). Defaults to 5 minutes.
        public var maximumPositiveTTL: Duration
        /// How long a refusal is kept. Defaults to 10 s.
        public var negativeTTL: Duration
        /// Clock skew allowed on `exp` and `nbf`. Defaults to 60 s.
        public var leeway: Duration
        /// Accepted issuers (`iss`); empty accepts any.
        public var issuers: Set<String>
        /// The token's `aud` must contain one of these; empty skips the check.
        public var audiences: Set<String>
        /// Claim names. Principal defaults to `sub`, then `username`, then `client_id` when absent.
        public var principalClaim: String
        public var tenantClaim: String?
        public var rolesClaim: String?

        public init(
            url: String, clientID: String, clientSecret: String, clientAuthentication: ClientAuthentication = .clientSecretBasic,
            tokenTypeHint: String? = "access_token", timeout: Duration = .seconds(2), maximumResponseBytes: Int = 64 * 1024,
            maximumTokenLength: Int = 16 * 1024, maximumPositiveTTL: Duration = .seconds(300), negativeTTL: Duration = .seconds(10),
            leeway: Duration = .seconds(60), issuers: Set<String> = [], audiences: Set<String> = [], principalClaim: String = "sub",
            tenantClaim: String? = nil, rolesClaim: String? = nil
        ) {
            self.url = url
            self.clientID = clientID
            self.clientSecret = clientSecret
            self.clientAuthentication = clientAuthentication
            self.tokenTypeHint = tokenTypeHint
            self.timeout = timeout
            self.maximumResponseBytes = maximumResponseBytes
            self.maximumTokenLength = maximumTokenLength
            self.maximumPositiveTTL = maximumPositiveTTL
            self.negativeTTL = negativeTTL
            self.leeway = leeway
            self.issuers = issuers
            self.audiences = audiences
            self.principalClaim = principalClaim
            self.tenantClaim = tenantClaim
            self.rolesClaim = rolesClaim
        }

        public var description: String {
            "IntrospectionAuthenticator.Configuration(url: \(redactedURL(url)), clientID: \(clientID), clientSecret: <\(clientSecret.utf8.count) bytes>, "
                + "clientAuthentication: \(clientAuthentication.rawValue))"
        }
    }

    /// One introspection request as the transport sends it.
    public struct Request: Sendable {
        public var url: String
        /// `Authorization` header, for `client_secret_basic`.
        public var authorization: String?
        /// The form body.
        public var body: [UInt8]
        public var timeout: Duration
        public var maximumResponseBytes: Int
    }

    typealias Outcome = (verdict: IntrospectionVerdict, keepFor: Duration)

    public let configuration: Configuration
    let cache: any IntrospectionCache
    let clock: any ToolOpsClock
    let transport: @Sendable (Request) async throws -> (status: Int, body: [UInt8])
    private let inFlight = Mutex<[String: Task<Outcome, any Error>]>([:])
    private let requestCount = Atomic<Int>(0)

    /// - Parameters:
    ///   - cache: where verdicts are kept; a Redis cache shares them between replicas.
    ///     Defaults to a ``MemoryIntrospectionCache``.
    ///   - clock: a wall clock (`exp` and `nbf` are Unix seconds).
    ///   - transport: how the request is sent; defaults to AsyncHTTPClient's shared client.
    public init(
        _ configuration: Configuration, cache: any IntrospectionCache = MemoryIntrospectionCache(), clock: any ToolOpsClock = WallClock(),
        transport: (@Sendable (Request) async throws -> (status: Int, body: [UInt8]))? = nil
    ) throws(ToolOpsError) {
        try requireAuthConfiguration(URL(string: configuration.url)?.host != nil, "the introspection URL \(redactedURL(configuration.url)) is not an absolute URL")
        try requireAuthConfiguration(!configuration.clientID.isEmpty, "introspection needs a client id")
        self.configuration = configuration
        self.cache = cache
        self.clock = clock
        self.transport = transport ?? Self.httpPost
    }

    /// Requests sent to the endpoint so far.
    public var requests: Int { requestCount.load(ordering: .relaxed) }

    public func authenticate(_ credentials: AuthCredentials) async throws(AuthError) -> Identity? {
        guard let token = credentials.bearerToken else { return nil }
        guard token.utf8.count <= configuration.maximumTokenLength else {
            throw AuthError(.malformed, "bearer token longer than \(configuration.maximumTokenLength) bytes")
        }
        let tokenHash = APIKeyRecord.hex(Array(SHA256.hash(data: Array(token.utf8))))
        if let verdict = try? await cache.verdict(for: tokenHash) {
            return try accept(verdict)
        }
        let task = inFlight.withLock { running -> Task<Outcome, any Error> in
            if let task = running[tokenHash] { return task }
            // Awaited by every caller with this token; it ends within the request's timeout.
            let task = Task { try await self.introspect(token) }
            running[tokenHash] = task
            return task
        }
        let result = await task.result
        let first = inFlight.withLock { running in
            guard running[tokenHash] == task else { return false }
            running.removeValue(forKey: tokenHash)
            return true
        }
        switch result {
        case .success(let outcome):
            if first, outcome.keepFor > .zero { try? await cache.store(outcome.verdict, for: tokenHash, keepFor: outcome.keepFor) }
            return try accept(outcome.verdict)
        case .failure(let error as AuthError): throw error
        case .failure: throw AuthError(.providerUnavailable, "the introspection endpoint could not be asked")
        }
    }

    /// A verdict applied now: a cached active token still expires on time.
    func accept(_ verdict: IntrospectionVerdict) throws(AuthError) -> Identity {
        switch verdict {
        case .refused(let reason):
            throw AuthError(reason, Self.message(for: reason))
        case .active(let identity):
            if let expiry = identity.expiresAt, clock.now.nanoseconds >= expiry.nanoseconds &+ configuration.leeway.nanosecondsClamped {
                throw AuthError(.expired, Self.message(for: .expired))
            }
            return identity
        }
    }

    static func message(for reason: AuthError.Reason) -> String {
        switch reason {
        case .inactive: "token is not active"
        case .expired: "token expired"
        case .notYetValid: "token not valid yet"
        default: "token not accepted"
        }
    }

    /// One request to the endpoint, its answer judged.
    func introspect(_ token: String) async throws -> Outcome {
        var form = "token=" + Self.formEncode(token)
        if let hint = configuration.tokenTypeHint { form += "&token_type_hint=" + Self.formEncode(hint) }
        var authorization: String?
        switch configuration.clientAuthentication {
        case .clientSecretBasic:
            let pair = Self.formEncode(configuration.clientID) + ":" + Self.formEncode(configuration.clientSecret)
            authorization = "Basic " + Data(pair.utf8).base64EncodedString()
        case .clientSecretPost:
            form += "&client_id=" + Self.formEncode(configuration.clientID) + "&client_secret=" + Self.formEncode(configuration.clientSecret)
        }
        requestCount.add(1, ordering: .relaxed)
        let response: (status: Int, body: [UInt8])
        do {
            response = try await transport(
                Request(
                    url: configuration.url, authorization: authorization, body: Array(form.utf8), timeout: configuration.timeout,
                    maximumResponseBytes: configuration.maximumResponseBytes))
        } catch {
            throw AuthError(.providerUnavailable, "the introspection endpoint could not be reached")
        }
        guard response.status == 200 else {
            throw AuthError(.providerUnavailable, "the introspection endpoint answered \(response.status)")
        }
        guard response.body.count <= configuration.maximumResponseBytes else {
            throw AuthError(.providerUnavailable, "the introspection response exceeds \(configuration.maximumResponseBytes) bytes")
        }
        let json: JSONValue
        do {
            json = try JSONValue(parsing: response.body, limits: .init(maximumDepth: 8, maximumBytes: configuration.maximumResponseBytes))
        } catch {
            throw AuthError(.providerUnavailable, "the introspection response is not JSON")
        }
        guard case .bool(let active)? = json["active"] else {
            throw AuthError(.providerUnavailable, "the introspection response has no active member")
        }
        let refusal = (IntrospectionVerdict.refused(.inactive), configuration.negativeTTL)
        guard active else { return refusal }
        return judge(json)
    }

    /// An active response's claims checked and read.
    func judge(_ json: JSONValue) -> Outcome {
        let now = clock.now.nanoseconds
        let leeway = configuration.leeway.nanosecondsClamped
        let negative = configuration.negativeTTL
        let exp = json["exp"].flatMap(JWTAuthenticator.seconds).map { $0 &* 1_000_000_000 }
        if let exp, now >= exp &+ leeway { return (.refused(.expired), negative) }
        if let nbf = json["nbf"].flatMap(JWTAuthenticator.seconds), now &+ leeway < nbf &* 1_000_000_000 { return (.refused(.notYetValid), negative) }
        if !configuration.issuers.isEmpty, !(json["iss"]?.stringValue.map(configuration.issuers.contains) ?? false) {
            return (.refused(.invalidCredentials), negative)
        }
        if !configuration.audiences.isEmpty, !JWTAuthenticator.strings(json["aud"]).contains(where: configuration.audiences.contains) {
            return (.refused(.invalidCredentials), negative)
        }
        let principal = [configuration.principalClaim, "username", "client_id"].lazy.compactMap { json[$0]?.stringValue }.first { !$0.isEmpty }
        guard let principal else { return (.refused(.invalidCredentials), negative) }
        var identity = Identity(principal: principal, method: .oauth2)
        if let name = configuration.tenantClaim { identity.tenant = json[name]?.stringValue }
        if let name = configuration.rolesClaim { identity.roles = JWTAuthenticator.strings(json[name]) }
        identity.scopes = JWTAuthenticator.strings(json["scope"]).flatMap { $0.split(separator: " ").map(String.init) }
        for claim in ["client_id", "iss", "token_type"] { if let value = json[claim]?.stringValue { identity.claims[claim] = value } }
        var keepFor = configuration.maximumPositiveTTL
        if let exp {
            identity.expiresAt = ClockInstant(nanoseconds: exp)
            keepFor = min(keepFor, .nanoseconds(exp &- now))
        }
        return (.active(identity), keepFor)
    }

    /// `application/x-www-form-urlencoded`: unreserved characters kept, everything else as `%XX`.
    static func formEncode(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        let digits = Array("0123456789ABCDEF".utf8)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(Unicode.Scalar(digits[Int(byte >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(digits[Int(byte & 15)]))
            }
        }
        return out
    }

    /// POST with AsyncHTTPClient, bounded in time and size.
    @Sendable static func httpPost(_ request: Request) async throws -> (status: Int, body: [UInt8]) {
        var outgoing = HTTPClientRequest(url: request.url)
        outgoing.method = .POST
        outgoing.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        outgoing.headers.add(name: "Accept", value: "application/json")
        if let authorization = request.authorization { outgoing.headers.add(name: "Authorization", value: authorization) }
        outgoing.body = .bytes(ByteBuffer(bytes: request.body))
        let milliseconds = max(1, request.timeout.nanosecondsClamped / 1_000_000)
        let response = try await HTTPClient.shared.execute(outgoing, timeout: .milliseconds(milliseconds))
        guard response.status == .ok else { return (Int(response.status.code), []) }
        let body = try await response.body.collect(upTo: request.maximumResponseBytes)
        return (200, Array(buffer: body))
    }
}

/// A URL without its user info or query (where credentials hide).
func redactedURL(_ url: String) -> String {
    guard var components = URLComponents(string: url) else { return "(unparsable URL)" }
    components.user = nil
    components.password = nil
    components.query = nil
    return components.string ?? "(unparsable URL)"
}
