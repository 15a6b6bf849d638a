import ToolOpsCore

/// An API key as stored: its digest and what it vouches for, never the key.
public struct APIKeyRecord: Sendable, Hashable {
    /// An id of the key for operators (shown in lists and audit lines, revoked by): not secret.
    public var id: String
    /// ``APIKeyHasher/digest(_:)`` of the key.
    public var digest: [UInt8]
    public var principal: String
    public var tenant: String?
    public var roles: [String]
    public var scopes: [String]
    /// Wall-clock expiry, if any.
    public var expiresAt: ClockInstant?
    public var metadata: [String: String]

    public init(
        id: String, digest: [UInt8], principal: String, tenant: String? = nil, roles: [String] = [], scopes: [String] = [],
        expiresAt: ClockInstant? = nil, metadata: [String: String] = [:]
    ) {
        self.id = id
        self.digest = digest
        self.principal = principal
        self.tenant = tenant
        self.roles = roles
        self.scopes = scopes
        self.expiresAt = expiresAt
        self.metadata = metadata
    }

    /// The index the record is stored under (``APIKeyHasher/lookupID(_:)`` of its digest).
    public var lookupID: String { APIKeyHasher.lookupID(digest) }
}

/// Where API keys live. Memory here; file and Redis stores implement the same protocol.
public protocol APIKeyStore: Sendable {
    /// The record stored under `lookupID`, if any. Throws only when the store cannot be asked.
    func record(lookupID: String) async throws -> APIKeyRecord?
    /// Adds or replaces a record.
    func put(_ record: APIKeyRecord) async throws
    /// Removes the record with this ``APIKeyRecord/id``; `true` if there was one.
    @discardableResult
    func revoke(id: String) async throws -> Bool
}

/// A store that announces changes, so an authenticator can drop cached verdicts at once.
public protocol APIKeyChangeSource: Sendable {
    /// Calls `handler` with the lookup id of every record written or revoked from now on, and
    /// with `nil` when changes may have been missed (a lost channel): drop everything then.
    func onChange(_ handler: @escaping @Sendable (String?) -> Void)
}
