#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import ToolOpsCore

/// API keys as files in one directory (one host, any number of processes): `<lookup id>.json`
/// holding the record's canonical JSON — the digest, never the key — written atomically
/// (rename), so a reader sees the old record or the new one, never a torn one.
///
/// A revocation in this process reaches its authenticators at once; other processes on the
/// host notice within their authenticator's cache TTL. A corrupt file is a store failure
/// (`providerUnavailable`), never a key.
public final class FileAPIKeyStore: APIKeyStore, APIKeyChangeSource {
    public let directory: String
    private let handlers = Mutex<[@Sendable (String?) -> Void]>([])

    public init(directory: String) throws(ToolOpsError) {
        try FileIO.makeDirectories(directory)
        self.directory = directory
    }

    func path(_ lookupID: String) -> String { "\(directory)/\(lookupID).json" }

    public func record(lookupID: String) async throws -> APIKeyRecord? {
        guard APIKeyRecord.isLookupID(lookupID) else { return nil }
        guard FileIO.status(path(lookupID)) != nil else { return nil }
        guard let bytes = FileIO.read(path(lookupID), limit: 64 * 1024) else {
            throw ToolOpsError(.storeUnavailable, "the API-key file \(lookupID).json cannot be read: \(FileIO.errorText())")
        }
        return try APIKeyRecord(canonicalJSON: bytes)
    }

    public func put(_ record: APIKeyRecord) async throws {
        try FileIO.writeAtomically(path(record.lookupID), try record.canonicalJSON())
        notify(record.lookupID)
    }

    @discardableResult
    public func revoke(id: String) async throws -> Bool {
        var removed = false
        for name in FileIO.list(directory) where name.hasSuffix(".json") {
            let lookupID = String(name.dropLast(5))
            guard APIKeyRecord.isLookupID(lookupID), let record = try? await record(lookupID: lookupID), record.id == id else { continue }
            if unlink(path(lookupID)) == 0 {
                removed = true
                notify(lookupID)
            }
        }
        return removed
    }

    public func onChange(_ handler: @escaping @Sendable (String?) -> Void) {
        handlers.withLock { $0.append(handler) }
    }

    private func notify(_ lookupID: String) {
        for handler in handlers.withLock({ $0 }) { handler(lookupID) }
    }
}
