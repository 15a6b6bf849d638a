import ServiceLifecycle
import ToolOpsCore

/// A store whose per-key state can be swept: state that can no longer change a decision is
/// forgotten (see each store). Stores also sweep as they are written to; a ``StoreSweeper``
/// sweeps when no traffic comes.
public protocol SweepableStore: Sendable {
    /// Forgets idle state now; returns how many keys were forgotten.
    @discardableResult
    func sweep() -> Int
}

/// Sweeps stores on an interval until graceful shutdown, so idle per-key state (a wave of
/// tenants that went quiet) is released even when no further call comes to trigger a sweep.
///
/// ```swift
/// let sweeper = StoreSweeper(stores: [limits, breakers, bulkheads])
/// let group = ServiceGroup(services: [sweeper, server], gracefulShutdownSignals: [.sigterm], logger: logger)
/// ```
///
/// File stores sweep with blocking file I/O on the task that runs the sweeper (a directory
/// listing and one small read per file).
public struct StoreSweeper: Service {
    public let stores: [any SweepableStore]
    /// Time between sweeps. Defaults to 30 s.
    public let interval: Duration
    let clock: any ToolOpsClock

    public init(stores: [any SweepableStore], interval: Duration = .seconds(30), clock: any ToolOpsClock = SystemClock()) {
        self.stores = stores
        self.interval = max(interval, .milliseconds(10))
        self.clock = clock
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await clock.sleep(until: clock.now + interval)
                for store in stores { store.sweep() }
            }
        }
    }
}

