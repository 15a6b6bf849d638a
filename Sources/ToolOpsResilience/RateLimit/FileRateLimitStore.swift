import ToolOpsCore

/// Rate-limit state in files: several processes on one host share the limits.
///
/// ```swift
/// let store = try FileRateLimitStore(directory: "/var/lib/toolops/ratelimit")
/// ```
public final class FileRateLimitStore: RateLimitStore, SweepableStore {
    /// The directory the state lives in (for its file count, or to sweep it).
    public let files: FileStateDirectory
    let clock: any ToolOpsClock

    /// `clock` must be shared by all processes (``SystemClock`` is: it is the host's monotonic clock).
    ///
    /// At ``FileStateDirectory/Configuration/maximumKeys`` buckets that are all partly drained,
    /// a request for a new key is refused (`retryAfter` one second) — a limiter that cannot
    /// track a key does not let it through unlimited.
    public init(
        directory: String, clock: any ToolOpsClock = SystemClock(), configuration: FileStateDirectory.Configuration = .init()
    ) throws(ToolOpsError) {
        self.files = try FileStateDirectory(path: directory, configuration: configuration)
        self.clock = clock
    }

    public func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        let keys = requests.map(\.key)
        defer { if files.sweepDue() { sweep() } }
        return try files.update(keys) { states in
            let now = clock.now.nanoseconds
            if states.contains(where: { $0 == nil }) && !files.roomForNewKey(sweep: { sweep() }) {
                return requests.map {
                    RateLimitDecision(allowed: false, limit: $0.limit.burst, remaining: 0, retryAfter: .seconds(1), resetAfter: .seconds(1))
                }
            }
            var tats: [String: Int64] = [:]
            for (key, state) in zip(keys, states) {
                // A TAT absurdly far ahead is corrupt (or from a clock we do not share): drop it.
                if let tat = state?["tat"]?.int64Value, tat - now < 366 * 24 * 3_600_000_000_000 { tats[key] = tat }
            }
            let decisions = GCRA.apply(requests, maxWait: maxWait, now: now, tats: &tats)
            for (index, key) in keys.enumerated() {
                if let tat = tats[key] { states[index] = .object(["tat": .integer(tat)]) }
            }
            return decisions
        }
    }

    /// Removes the files of full buckets (they decide like unknown ones). Done by itself every
    /// 4,096 decisions of this process or a minute after the last sweep; returns the keys removed.
    @discardableResult
    public func sweep() -> Int {
        let now = clock.now.nanoseconds
        return files.sweep { state in (state["tat"]?.int64Value ?? .min) <= now }
    }
}
