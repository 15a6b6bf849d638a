import Synchronization
import ToolOpsCore

/// Caps retries at a share of calls so a struggling dependency is not hit by a retry storm:
/// over a sliding `window`, retries may not exceed `minimumPerSecond · window + ratio · calls`.
public final class RetryBudget: Sendable {
    struct State {
        var buckets: [(second: Int64, calls: Int, retries: Int)] = []
    }
    public let ratio: Double
    public let minimumPerSecond: Int
    public let window: Duration
    private let state = Mutex(State())
    private let clock: any ToolOpsClock

    /// - Parameters:
    ///   - ratio: retries allowed per call. Defaults to 0.2.
    ///   - minimumPerSecond: retries always allowed per second, so low traffic can still retry. Defaults to 10.
    ///   - window: defaults to 10 s.
    public init(ratio: Double = 0.2, minimumPerSecond: Int = 10, window: Duration = .seconds(10), clock: any ToolOpsClock = SystemClock()) throws(ToolOpsError) {
        try requireConfiguration(ratio >= 0 && ratio.isFinite, "retry budget ratio must be ≥ 0")
        try requireConfiguration(minimumPerSecond >= 0, "minimumPerSecond must be ≥ 0")
        try requireConfiguration(window >= .seconds(1), "retry budget window must be at least 1 s")
        self.ratio = ratio
        self.minimumPerSecond = minimumPerSecond
        self.window = window
        self.clock = clock
    }

    func recordCall() { update { $0.calls += 1 } }

    /// Takes a retry from the budget; `false` when it is spent.
    func tryRetry() -> Bool {
        let now = clock.now.nanoseconds / 1_000_000_000
        let windowSeconds = max(1, window.nanosecondsClamped / 1_000_000_000)
        return state.withLock { state in
            prune(&state, now: now, windowSeconds: windowSeconds)
            let calls = state.buckets.reduce(0) { $0 + $1.calls }
            let retries = state.buckets.reduce(0) { $0 + $1.retries }
            let allowed = Double(minimumPerSecond) * Double(windowSeconds) + ratio * Double(calls)
            guard Double(retries) + 1 <= allowed else { return false }
            touch(&state, now: now)
            state.buckets[state.buckets.count - 1].retries += 1
            return true
        }
    }

    private func update(_ body: (inout (second: Int64, calls: Int, retries: Int)) -> Void) {
        let now = clock.now.nanoseconds / 1_000_000_000
        let windowSeconds = max(1, window.nanosecondsClamped / 1_000_000_000)
        state.withLock { state in
            prune(&state, now: now, windowSeconds: windowSeconds)
            touch(&state, now: now)
            body(&state.buckets[state.buckets.count - 1])
        }
    }

    private func touch(_ state: inout State, now: Int64) {
        if state.buckets.last?.second != now { state.buckets.append((now, 0, 0)) }
    }

    private func prune(_ state: inout State, now: Int64, windowSeconds: Int64) {
        if let first = state.buckets.firstIndex(where: { $0.second > now - windowSeconds }) {
            if first > 0 { state.buckets.removeFirst(first) }
        } else {
            state.buckets.removeAll()
        }
    }
}
