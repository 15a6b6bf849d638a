import ServiceContextModule
import ToolOpsCore

/// Who is calling: what an ``Authenticator`` vouches for.
public struct Identity: Sendable, Hashable {
    /// How the identity was established.
    public enum Method: String, Sendable, Hashable {
        case apiKey = "api_key"
        case jwt
        case oauth2
        case anonymous
    }

    /// The principal's id (a user, a service): never a credential.
    public var principal: String
    public var tenant: String?
    /// Role names, looked up in the ``RBACPolicy``.
    public var roles: [String]
    /// Token scopes (OAuth2 `scope`, a JWT's scope claim, an API key's scopes), mapped to
    /// permissions by ``RBACPolicy/scopes``.
    public var scopes: [String]
    public var method: Method
    /// Extra claims worth keeping (never the token itself).
    public var claims: [String: String]
    /// When the credentials stop being valid (wall clock), if they do.
    public var expiresAt: ClockInstant?

    public init(
        principal: String, tenant: String? = nil, roles: [String] = [], scopes: [String] = [], method: Method,
        claims: [String: String] = [:], expiresAt: ClockInstant? = nil
    ) {
        self.principal = principal
        self.tenant = tenant
        self.roles = roles
        self.scopes = scopes
        self.method = method
        self.claims = claims
        self.expiresAt = expiresAt
    }

    /// Nobody in particular (with ``AuthMiddleware/Configuration/allowAnonymous``).
    public static let anonymous = Identity(principal: "anonymous", method: .anonymous)
}

private enum AuthIdentityKey: ServiceContextKey {
    typealias Value = Identity
    static var nameOverride: String? { "toolops.auth.identity" }
}

private enum AuthCredentialsKey: ServiceContextKey {
    typealias Value = AuthCredentials
    static var nameOverride: String? { "toolops.auth.credentials" }
}

extension ServiceContext {
    /// The authenticated identity of the call, set by ``AuthMiddleware`` (which also sets
    /// `toolIdentity` to its principal and `toolTenant` to its tenant).
    public var authIdentity: Identity? {
        get { self[AuthIdentityKey.self] }
        set { self[AuthIdentityKey.self] = newValue }
    }

    /// What the caller presented (request headers), put here by the transport (the HTTP layer)
    /// for ``AuthMiddleware``. Removed from the context once the call is authenticated, so
    /// nothing further down can see or leak it.
    public var authCredentials: AuthCredentials? {
        get { self[AuthCredentialsKey.self] }
        set { self[AuthCredentialsKey.self] = newValue }
    }
}
