import ToolOpsCore

/// What a token introspection said of a token, as it is cached and shared between replicas:
/// the identity it vouches for, or why it is refused. Never the token.
public enum IntrospectionVerdict: Sendable, Hashable {
    case active(Identity)
    /// Refused: ``AuthError/Reason/inactive``, ``AuthError/Reason/expired``,
    /// ``AuthError/Reason/notYetValid`` or ``AuthError/Reason/invalidCredentials`` (issuer, audience).
    case refused(AuthError.Reason)

    /// The verdict as canonical JSON (how the Redis cache keeps it).
    public func canonicalJSON() throws(ToolOpsError) -> [UInt8] {
        switch self {
        case .refused(let reason):
            return try JSONValue.object(["refused": .string(reason.name)]).canonicalEncoding()
        case .active(let identity):
            var object: [String: JSONValue] = [
                "principal": .string(identity.principal), "roles": .array(identity.roles.map(JSONValue.string)),
                "scopes": .array(identity.scopes.map(JSONValue.string)), "method": .string(identity.method.rawValue),
                "claims": .object(identity.claims.mapValues(JSONValue.string)),
            ]
            if let tenant = identity.tenant { object["tenant"] = .string(tenant) }
            if let expiresAt = identity.expiresAt { object["expiresAt"] = .integer(expiresAt.nanoseconds) }
            return try JSONValue.object(["active": .object(object)]).canonicalEncoding()
        }
    }

    /// A stored verdict; anything else (corrupt, foreign, truncated) is a store failure.
    public init(canonicalJSON bytes: [UInt8]) throws(ToolOpsError) {
        let unreadable = ToolOpsError(.storeUnavailable, "an introspection result is not readable")
        let json: JSONValue
        do {
            json = try JSONValue(parsing: bytes, limits: .init(maximumDepth: 4, maximumBytes: 64 * 1024))
        } catch {
            throw unreadable
        }
        if let name = json["refused"]?.stringValue {
            guard let reason = AuthError.Reason.refusals.first(where: { $0.name == name }) else { throw unreadable }
            self = .refused(reason)
            return
        }
        guard case .object? = json["active"], let active = json["active"], let principal = active["principal"]?.stringValue,
            let method = active["method"]?.stringValue.flatMap(Identity.Method.init(rawValue:))
        else { throw unreadable }
        func strings(_ key: String) -> [String] {
            guard case .array(let values)? = active[key] else { return [] }
            return values.compactMap(\.stringValue)
        }
        var claims: [String: String] = [:]
        if case .object(let members)? = active["claims"] {
            for (key, value) in members { if let text = value.stringValue { claims[key] = text } }
        }
        self = .active(
            Identity(
                principal: principal, tenant: active["tenant"]?.stringValue, roles: strings("roles"), scopes: strings("scopes"), method: method,
                claims: claims, expiresAt: active["expiresAt"]?.int64Value.map(ClockInstant.init(nanoseconds:))))
    }
}

extension AuthError.Reason {
    /// The reasons a verdict may carry.
    static let refusals: [AuthError.Reason] = [.inactive, .expired, .notYetValid, .invalidCredentials]
}
