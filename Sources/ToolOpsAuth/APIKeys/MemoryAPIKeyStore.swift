import Synchronization

/// API keys in this process.
public final class MemoryAPIKeyStore: APIKeyStore, APIKeyChangeSource {
    private let records = Mutex<[String: APIKeyRecord]>([:])
    private let revoked = Mutex<[@Sendable (String?) -> Void]>([])

    public init(_ records: [APIKeyRecord] = []) {
        self.records.withLock { stored in for record in records { stored[record.lookupID] = record } }
    }

    public func record(lookupID: String) async throws -> APIKeyRecord? {
        records.withLock { $0[lookupID] }
    }

    public func put(_ record: APIKeyRecord) async throws {
        records.withLock { $0[record.lookupID] = record }
        notify(record.lookupID)
    }

    @discardableResult
    public func revoke(id: String) async throws -> Bool {
        let removed = records.withLock { records -> [String] in
            let matching = records.filter { $0.value.id == id }.map(\.key)
            for key in matching { records[key] = nil }
            return matching
        }
        for lookupID in removed { notify(lookupID) }
        return !removed.isEmpty
    }

    /// Calls `handler` with the lookup id of every record replaced or revoked from now on
    /// (the authenticator drops its cached verdict).
    public func onChange(_ handler: @escaping @Sendable (String?) -> Void) {
        revoked.withLock { $0.append(handler) }
    }

    private func notify(_ lookupID: String) {
        for handler in revoked.withLock({ $0 }) { handler(lookupID) }
    }
}
