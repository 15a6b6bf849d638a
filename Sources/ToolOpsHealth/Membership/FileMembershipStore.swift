import ToolOpsCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Membership shared by the processes of one host: one file per replica in a directory,
/// holding the replica and its expiry in wall-clock time. Files are replaced atomically; an
/// expired, corrupt or truncated file is ignored and removed.
public final class FileMembershipStore: MembershipStore {
    public let directory: String
    let clock: any ToolOpsClock

    /// - Parameter clock: a wall clock shared by the processes (default ``WallClock``).
    public init(directory: String, clock: any ToolOpsClock = WallClock()) throws(ToolOpsError) {
        try FileIO.makeDirectories(directory)
        self.directory = directory
        self.clock = clock
    }

    func path(_ id: String) -> String { "\(directory)/\(id).replica" }

    public func register(_ replica: ReplicaInfo, ttl: Duration) async throws {
        try requireTTL(ttl)
        let record: JSONValue = ["expiresAt": .integer((clock.now + ttl).nanoseconds), "replica": replica.json]
        try FileIO.writeAtomically(path(replica.id), try record.canonicalEncoding())
    }

    public func deregister(id: String) async throws {
        try ReplicaInfo.validateID(id)
        _ = unlink(path(id))
    }

    public func members() async throws -> [ReplicaInfo] {
        let now = clock.now.nanoseconds
        var replicas: [ReplicaInfo] = []
        for name in FileIO.list(directory) where name.hasSuffix(".replica") {
            let file = "\(directory)/\(name)"
            guard let bytes = FileIO.read(file, limit: 128 * 1024) else { continue }  // removed meanwhile
            guard let record = try? JSONValue(parsing: bytes), let expires = record["expiresAt"]?.int64Value,
                let json = record["replica"], let replica = try? ReplicaInfo(json: json), "\(replica.id).replica" == name
            else {
                removeIfUnchanged(file, bytes)
                continue
            }
            if expires <= now {
                removeIfUnchanged(file, bytes)
            } else {
                replicas.append(replica)
            }
        }
        return replicas.sorted { $0.id < $1.id }
    }

    /// A heartbeat may have rewritten the file since it was read; remove only what was judged.
    func removeIfUnchanged(_ file: String, _ bytes: [UInt8]) {
        if FileIO.read(file, limit: 128 * 1024) == bytes { _ = unlink(file) }
    }
}
