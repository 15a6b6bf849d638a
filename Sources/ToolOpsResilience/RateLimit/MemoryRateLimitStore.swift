import Synchronization
import ToolOpsCore

/// Rate-limit state in this process. The default store.
///
/// Keys may come from callers (a limit per tenant), so the state is bounded: a bucket that is
/// full again (its theoretical arrival time has passed) decides exactly like a bucket never
/// seen, and is forgotten now and then. At most ``Configuration/maximumKeys`` buckets are
/// tracked; when that many are all partly drained, a request for a new key is **refused**
/// (`retryAfter`: until the first tracked bucket is full again and can make room) — a limiter
/// that cannot track a key does not let it through unlimited.
public final class MemoryRateLimitStore: SynchronousRateLimitStore, SweepableStore {
    public struct Configuration: Sendable, Hashable {
        /// Buckets tracked at most. Defaults to 1,000,000 (~100 MB at worst).
        public var maximumKeys: Int
        public init(maximumKeys: Int = 1_000_000) { self.maximumKeys = max(1, maximumKeys) }
    }

    struct State {
        var tats: [String: Int64] = [:]
        var writesSinceSweep = 0
        /// The earliest a tracked bucket is full again, as of the last sweep: before it, a
        /// sweep frees nothing (so a refusal at the ceiling costs no scan).
        var sweepFreesNothingBefore: Int64 = .min
    }
    private let state = Mutex(State())
    private let clock: any ToolOpsClock
    public let configuration: Configuration

    public init(clock: any ToolOpsClock = SystemClock(), configuration: Configuration = .init()) {
        self.clock = clock
        self.configuration = configuration
    }

    public func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        decide(requests, maxWait: maxWait)
    }

    /// Synchronous form of ``acquire(_:maxWait:)``.
    public func decide(_ requests: [RateLimitRequest], maxWait: Duration) -> [RateLimitDecision] {
        let now = clock.now.nanoseconds
        let maximum = configuration.maximumKeys
        return state.withLock { state in
            defer { Self.sweepNowAndThen(&state, now: now) }
            if state.tats.count >= maximum, requests.contains(where: { state.tats[$0.key] == nil }),
                let refusal = Self.roomOrRefusal(&state, now: now, needed: Set(requests.map(\.key)).filter { state.tats[$0] == nil }.count, maximum: maximum)
            {
                return requests.map { Self.refused($0, after: refusal) }
            }
            return GCRA.apply(requests, maxWait: maxWait, now: now, tats: &state.tats)
        }
    }

    public func decide(_ request: RateLimitRequest, maxWait: Duration) -> RateLimitDecision {
        let now = clock.now.nanoseconds
        let maximum = configuration.maximumKeys
        return state.withLock { state in
            defer { Self.sweepNowAndThen(&state, now: now) }
            if state.tats.count >= maximum, state.tats[request.key] == nil,
                let refusal = Self.roomOrRefusal(&state, now: now, needed: 1, maximum: maximum)
            {
                return Self.refused(request, after: refusal)
            }
            return GCRA.apply(request, maxWait: maxWait, now: now, tats: &state.tats)
        }
    }

    /// At the ceiling: forgets full buckets; if that leaves no room for `needed` new keys,
    /// how long until the first tracked bucket is full again.
    private static func roomOrRefusal(_ state: inout State, now: Int64, needed: Int, maximum: Int) -> Duration? {
        if now >= state.sweepFreesNothingBefore { sweep(&state, now: now) }
        guard state.tats.count + needed > maximum else { return nil }
        return .nanoseconds(max(1_000_000, state.sweepFreesNothingBefore - now))
    }

    private static func refused(_ request: RateLimitRequest, after wait: Duration) -> RateLimitDecision {
        RateLimitDecision(allowed: false, limit: request.limit.burst, remaining: 0, retryAfter: wait, resetAfter: wait)
    }

    private static func sweepNowAndThen(_ state: inout State, now: Int64) {
        state.writesSinceSweep += 1
        if state.writesSinceSweep >= 4096 && state.tats.count > 1024 { sweep(&state, now: now) }
    }

    /// Buckets whose TAT has passed are full again: they decide like unknown ones.
    private static func sweep(_ state: inout State, now: Int64) {
        state.writesSinceSweep = 0
        // In place: a filtered copy would double the table's memory while both exist.
        var full: [String] = []
        var soonest = Int64.max
        for (key, tat) in state.tats {
            if tat <= now { full.append(key) } else { soonest = min(soonest, tat) }
        }
        for key in full { state.tats.removeValue(forKey: key) }
        state.sweepFreesNothingBefore = soonest == .max ? now : soonest
    }

    /// Forgets every full bucket now (also done every 4,096 decisions once more than 1,024
    /// buckets are tracked, and at the ceiling).
    @discardableResult
    public func sweep() -> Int {
        let now = clock.now.nanoseconds
        return state.withLock { state in
            let before = state.tats.count
            Self.sweep(&state, now: now)
            return before - state.tats.count
        }
    }

    /// Number of keys with state (full buckets may already be forgotten).
    public var keyCount: Int { state.withLock { $0.tats.count } }
}

/// Runs `body` on `value` in place (with a dictionary subscript: one lookup for read and write).
@inline(__always)
func modify<Value, Result>(_ value: inout Value, _ body: (inout Value) -> Result) -> Result { body(&value) }
