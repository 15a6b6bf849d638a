import Synchronization
import ToolOpsCore

/// Rate-limit state in this process. The default store.
public final class MemoryRateLimitStore: SynchronousRateLimitStore {
    struct State {
        var tats: [String: Int64] = [:]
        var writesSinceSweep = 0
    }
    private let state = Mutex(State())
    private let clock: any ToolOpsClock

    public init(clock: any ToolOpsClock = SystemClock()) { self.clock = clock }

    public func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        decide(requests, maxWait: maxWait)
    }

    /// Synchronous form of ``acquire(_:maxWait:)``.
    public func decide(_ requests: [RateLimitRequest], maxWait: Duration) -> [RateLimitDecision] {
        let now = clock.now.nanoseconds
        return state.withLock { state in
            defer { Self.sweep(&state, now: now) }
            return GCRA.apply(requests, maxWait: maxWait, now: now, tats: &state.tats)
        }
    }

    public func decide(_ request: RateLimitRequest, maxWait: Duration) -> RateLimitDecision {
        let now = clock.now.nanoseconds
        return state.withLock { state in
            defer { Self.sweep(&state, now: now) }
            return GCRA.apply(request, maxWait: maxWait, now: now, tats: &state.tats)
        }
    }

    /// Buckets whose TAT has passed are full again: forget them now and then.
    static func sweep(_ state: inout State, now: Int64) {
        state.writesSinceSweep += 1
        if state.writesSinceSweep >= 4096 && state.tats.count > 1024 {
            state.tats = state.tats.filter { $0.value > now }
            state.writesSinceSweep = 0
        }
    }

    /// Number of keys with state (full buckets may already be forgotten).
    public var keyCount: Int { state.withLock { $0.tats.count } }
}

/// Runs `body` on `value` in place (with a dictionary subscript: one lookup for read and write).
@inline(__always)
func modify<Value, Result>(_ value: inout Value, _ body: (inout Value) -> Result) -> Result { body(&value) }
