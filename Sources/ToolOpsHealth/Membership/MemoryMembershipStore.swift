import Synchronization
import ToolOpsCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Membership within one process (tests, single-replica deployments).
public final class MemoryMembershipStore: MembershipStore {
    let clock: any ToolOpsClock
    let entries = Mutex([String: (replica: ReplicaInfo, expires: ClockInstant)]())

    public init(clock: any ToolOpsClock = SystemClock()) { self.clock = clock }

    public func register(_ replica: ReplicaInfo, ttl: Duration) async throws {
        try requireTTL(ttl)
        let expires = clock.now + ttl
        entries.withLock { $0[replica.id] = (replica, expires) }
    }

    public func deregister(id: String) async throws {
        _ = entries.withLock { $0.removeValue(forKey: id) }
    }

    public func members() async throws -> [ReplicaInfo] {
        let now = clock.now
        return entries.withLock { entries in
            entries = entries.filter { $0.value.expires > now }
            return entries.values.map(\.replica).sorted { $0.id < $1.id }
        }
    }
}
