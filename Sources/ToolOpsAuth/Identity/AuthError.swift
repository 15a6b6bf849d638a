import ToolOpsCore

/// Why a caller was not authenticated. Messages never contain a credential.
public struct AuthError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Reason: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// Nothing this authenticator understands was presented.
        public static let missingCredentials = Reason(name: "missing_credentials")
        /// Presented, and wrong: unknown key, bad signature, wrong issuer or audience.
        public static let invalidCredentials = Reason(name: "invalid_credentials")
        /// Not decodable (bad base64, not a JWT, oversized).
        public static let malformed = Reason(name: "malformed")
        /// Past its expiry.
        public static let expired = Reason(name: "expired")
        /// Before its `nbf`.
        public static let notYetValid = Reason(name: "not_yet_valid")
        /// Revoked, or reported inactive by introspection.
        public static let inactive = Reason(name: "inactive")
        /// The store or endpoint that vouches for credentials could not be asked: neither yes nor no.
        public static let providerUnavailable = Reason(name: "provider_unavailable")
        public var description: String { name }
    }

    public var reason: Reason
    public var message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { "AuthError(\(reason)): \(message)" }

    /// As the pipeline reports it: ``ToolOpsError/Code/authenticationUnavailable`` for an
    /// unavailable provider, ``ToolOpsError/Code/unauthenticated`` otherwise.
    public var toolOpsError: ToolOpsError {
        ToolOpsError(reason == .providerUnavailable ? .authenticationUnavailable : .unauthenticated, message, underlying: self)
    }
}
