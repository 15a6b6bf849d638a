/// Keys from two stores: fixed ones first (from the configuration file, in memory), then a
/// shared one (Redis: keys created and revoked at run time, on every replica). Writes and
/// revocations go to the shared store; its change announcements reach the authenticator.
public struct LayeredAPIKeyStore: APIKeyStore, APIKeyChangeSource {
    public let fixed: any APIKeyStore
    public let shared: any APIKeyStore

    public init(fixed: any APIKeyStore, shared: any APIKeyStore) {
        self.fixed = fixed
        self.shared = shared
    }

    public func record(lookupID: String) async throws -> APIKeyRecord? {
        if let record = try await fixed.record(lookupID: lookupID) { return record }
        return try await shared.record(lookupID: lookupID)
    }

    public func put(_ record: APIKeyRecord) async throws {
        try await shared.put(record)
    }

    @discardableResult
    public func revoke(id: String) async throws -> Bool {
        try await shared.revoke(id: id)
    }

    public func onChange(_ handler: @escaping @Sendable (String?) -> Void) {
        (fixed as? any APIKeyChangeSource)?.onChange(handler)
        (shared as? any APIKeyChangeSource)?.onChange(handler)
    }
}
