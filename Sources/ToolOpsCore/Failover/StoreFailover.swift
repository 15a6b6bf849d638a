import Metrics
import Synchronization

/// A change in a fallback store's state, for metrics and logs.
public enum FailoverEvent: Sendable {
    /// The shared store (Redis) failed; the store now runs in its degraded mode.
    case degraded(store: String, error: any Error)
    /// The shared store answered again; the store is back on it.
    case recovered(store: String)
}

/// Receives ``FailoverEvent``s. Called outside any lock; keep it quick.
public typealias FailoverObserver = @Sendable (FailoverEvent) -> Void

/// The failover logic every fallback store shares: whether the shared store is usable, when
/// to try it again, the per-call deadline, background probes, and the degraded gauge.
package final class StoreFailover: Sendable {
    struct State {
        var degraded = false
        var nextProbe: ClockInstant = .init(nanoseconds: .min)
    }
    package let name: String
    package let mode: DegradedMode
    package let deadline: Duration
    package let probeInterval: Duration
    package let clock: any ToolOpsClock
    package let observer: FailoverObserver?
    private let state = Mutex(State())
    /// `toolops_store_degraded{store="…"}`: 1 while the policy runs on its degraded mode.
    private let gauge: Gauge

    package init(
        name: String, mode: DegradedMode, deadline: Duration, probeInterval: Duration,
        clock: any ToolOpsClock, observer: FailoverObserver?
    ) throws(ToolOpsError) {
        try requireConfiguration(deadline > .zero, "deadline must be positive")
        try requireConfiguration(probeInterval > .zero, "probeInterval must be positive")
        if case .local(let scale) = mode.kind {
            try requireConfiguration(scale > 0 && scale <= 1, "local fallback scale must be in (0, 1], got \(scale)")
        }
        self.name = name
        self.mode = mode
        self.deadline = deadline
        self.probeInterval = probeInterval
        self.clock = clock
        self.observer = observer
        self.gauge = Gauge(label: "toolops_store_degraded", dimensions: [("store", name)])
        gauge.record(0)
    }

    package var isDegraded: Bool { state.withLock { $0.degraded } }

    /// Runs `operation` on the shared store within the deadline (plus `extra`). Returns `nil`
    /// when the caller should use its degraded mode: the store is known to be down (and no
    /// probe is due), it reported an outage, or it missed the deadline. Other errors propagate.
    package func attempt<T: Sendable>(extra: Duration = .zero, _ operation: @escaping @Sendable () async throws -> T) async throws -> T? {
        guard shouldTryPrimary(now: clock.now) else { return nil }
        do {
            if let value = try await withDeadline(deadline + extra, clock: clock, operation) {
                succeeded()
                return value
            }
            failed(ToolOpsError(.storeUnavailable, "no answer within \(deadline)"), now: clock.now)
        } catch let error as ToolOpsError where error.code == .storeUnavailable {
            failed(error, now: clock.now)
        }
        try Task.checkCancellation()
        return nil
    }

    /// Always when healthy; once per probe interval while degraded (that call finds out).
    private func shouldTryPrimary(now: ClockInstant) -> Bool {
        state.withLock { state in
            guard state.degraded else { return true }
            guard now >= state.nextProbe else { return false }
            state.nextProbe = now + probeInterval
            return true
        }
    }

    /// While degraded, calls `check` every probe interval and switches back on success, so a
    /// store recovers even without traffic. Returns when the task is cancelled.
    package func runProbes(check: @escaping @Sendable () async throws -> Void) async {
        while !Task.isCancelled {
            do { try await clock.sleep(for: probeInterval) } catch { return }
            guard isDegraded else { continue }
            do {
                if try await withDeadline(deadline, clock: clock, { try await check(); return true }) == true { succeeded() }
            } catch {
                // Still down; the next interval tries again.
            }
        }
    }

    private func failed(_ error: any Error, now: ClockInstant) {
        let changed = state.withLock { state -> Bool in
            state.nextProbe = now + probeInterval
            defer { state.degraded = true }
            return !state.degraded
        }
        if changed {
            gauge.record(1)
            observer?(.degraded(store: name, error: error))
        }
    }

    private func succeeded() {
        let changed = state.withLock { state -> Bool in
            defer { state.degraded = false }
            return state.degraded
        }
        if changed {
            gauge.record(0)
            observer?(.recovered(store: name))
        }
    }
}
