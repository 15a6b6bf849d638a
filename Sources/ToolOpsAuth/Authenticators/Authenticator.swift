/// Establishes who is calling from what they presented.
///
/// Returns `nil` when the credentials hold nothing of its kind (no `X-API-Key` for an API-key
/// authenticator), so a ``CompositeAuthenticator`` can try the next one; throws an
/// ``AuthError`` when they hold something and it is not good.
public protocol Authenticator: Sendable {
    func authenticate(_ credentials: AuthCredentials) async throws(AuthError) -> Identity?
}

/// Tries authenticators in order.
///
/// The first identity wins. An authenticator that finds nothing of its kind (`nil`) is
/// skipped. A refusal (an ``AuthError``) ends the search with that error — credentials that
/// one provider rejects are not offered to the next — except ``AuthError/Reason/providerUnavailable``,
/// after which the others are still tried (an API key still works while the JWKS endpoint is
/// down); if none vouches, the unavailability is reported. When every one finds nothing:
/// `nil` (the middleware makes it ``AuthError/Reason/missingCredentials``).
public struct CompositeAuthenticator: Authenticator {
    public let authenticators: [any Authenticator]

    public init(_ authenticators: [any Authenticator]) {
        self.authenticators = authenticators
    }

    public func authenticate(_ credentials: AuthCredentials) async throws(AuthError) -> Identity? {
        var unavailable: AuthError?
        for authenticator in authenticators {
            do {
                if let identity = try await authenticator.authenticate(credentials) { return identity }
            } catch where error.reason == .providerUnavailable {
                unavailable = unavailable ?? error
            }
        }
        if let unavailable { throw unavailable }
        return nil
    }
}
