import ToolOpsCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The registry of live replicas. A registration lasts `ttl`; replicas refresh it with
/// heartbeats (``MembershipHeartbeat``), so one that dies without deregistering disappears
/// within its TTL.
public protocol MembershipStore: Sendable {
    /// Adds or refreshes `replica` (replacing what it reported before) for `ttl`.
    func register(_ replica: ReplicaInfo, ttl: Duration) async throws
    /// Removes a replica at once (graceful shutdown). Removing an unknown id is not an error.
    func deregister(id: String) async throws
    /// The replicas whose registration has not expired, sorted by id.
    func members() async throws -> [ReplicaInfo]
}

func requireTTL(_ ttl: Duration) throws(ToolOpsError) {
    guard ttl >= .milliseconds(1) else { throw ToolOpsError(.invalidInput, "registration ttl must be at least 1 ms") }
}
