import Synchronization
import ToolOpsCore

/// Bulkhead slots in this process, with a FIFO wait queue. The default store.
///
/// Keys may come from callers (a bulkhead per tenant), so the state is bounded: an idle
/// compartment (no slot held, nobody waiting) decides like an unknown one and is dropped when
/// more than 1,024 are idle. At most ``Configuration/maximumKeys`` compartments exist; when that
/// many all hold slots, a call for a new key is refused with `bulkheadFull`.
public final class MemoryBulkheadStore: SynchronousBulkheadStore, SweepableStore {
    public struct Configuration: Sendable, Hashable {
        /// Compartments (bulkhead keys) at most. Defaults to 100,000.
        public var maximumKeys: Int
        public init(maximumKeys: Int = 100_000) { self.maximumKeys = max(1, maximumKeys) }
    }

    typealias Waiter = CheckedContinuation<BulkheadPermit, any Error>
    /// A queued caller. It joins the queue in the same critical section that found the
    /// bulkhead full (so no release can slip in between); its continuation arrives a moment
    /// later, and a grant or abandonment in that gap is parked in `settled`.
    struct QueueEntry {
        var id: UInt64
        var waiter: Waiter?
    }
    struct Compartment {
        var held: Set<UInt64> = []
        var queue: [QueueEntry] = []
    }
    struct State {
        var compartments: [String: Compartment] = [:]
        var settled: [UInt64: Result<BulkheadPermit, any Error>] = [:]
        var nextToken: UInt64 = 0
        /// A compartment became idle and was kept since the last scan at the ceiling (so
        /// scanning again can make room; otherwise a refusal costs no scan).
        var idleKept = true
    }
    private let state = Mutex(State())
    private let clock: any ToolOpsClock
    public let configuration: Configuration

    public init(clock: any ToolOpsClock = SystemClock(), configuration: Configuration = .init()) {
        self.clock = clock
        self.configuration = configuration
    }

    /// Makes room for a new compartment at the ceiling by dropping idle ones; `false` if every
    /// compartment is in use.
    private static func room(_ state: inout State, for key: String, maximum: Int) -> Bool {
        guard state.compartments.count >= maximum, state.compartments.index(forKey: key) == nil else { return true }
        guard state.idleKept else { return false }
        state.compartments = state.compartments.filter { !$0.value.held.isEmpty || !$0.value.queue.isEmpty }
        state.idleKept = false
        return state.compartments.count < maximum
    }

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        let maximum = configuration.maximumKeys
        let immediate: Immediate = state.withLock { state in
            guard Self.room(&state, for: key, maximum: maximum) else { return .untracked }
            state.nextToken += 1
            let token = state.nextToken
            // Mutated in place: copying the compartment out would copy its set on every call.
            return Self.take(&state.compartments[key, default: Compartment()], token: token, key: key, limit: limit, maxWait: maxWait)
        }
        switch immediate {
        case .permit(let permit): return permit
        case .full: throw ToolOpsError(.bulkheadFull, "bulkhead \(key) is full (\(limit) in use)")
        case .untracked:
            throw ToolOpsError(.bulkheadFull, "bulkhead \(key) refused: \(maximum) bulkheads are in use (maximumKeys)")
        case .wait(let id): return try await wait(id: id, key: key, limit: limit, maxWait: maxWait)
        }
    }

    package func acquireNow(key: String, limit: Int) -> BulkheadPermit? {
        let maximum = configuration.maximumKeys
        return state.withLock { state in
            // At the ceiling: `acquire` decides (and explains a refusal).
            guard Self.room(&state, for: key, maximum: maximum) else { return nil }
            state.nextToken += 1
            let token = state.nextToken
            guard let index = state.compartments.index(forKey: key) else {
                var compartment = Compartment()
                compartment.held.insert(token)
                state.compartments[key] = compartment
                return BulkheadPermit(key: key, token: token)
            }
            // Index-based access: one hash lookup, and the compartment is mutated in place.
            guard state.compartments.values[index].held.count < limit && state.compartments.values[index].queue.isEmpty else {
                return nil
            }
            state.compartments.values[index].held.insert(token)
            return BulkheadPermit(key: key, token: token)
        }
    }

    /// Idle compartments are kept (re-creating one costs a set allocation per call) until
    /// there are this many; beyond, an emptied compartment is removed (keys may come from callers).
    static let keptCompartments = 1_024

    private static func take(_ compartment: inout Compartment, token: UInt64, key: String, limit: Int, maxWait: Duration) -> Immediate {
        if compartment.held.count < limit && compartment.queue.isEmpty {
            compartment.held.insert(token)
            return .permit(BulkheadPermit(key: key, token: token))
        }
        guard maxWait > .zero else { return .full }
        compartment.queue.append(QueueEntry(id: token, waiter: nil))
        return .wait(token)
    }

    enum Immediate { case permit(BulkheadPermit), full, wait(UInt64), untracked }

    private func wait(id: UInt64, key: String, limit: Int, maxWait: Duration) async throws -> BulkheadPermit {
        let clock = self.clock
        return try await withThrowingTaskGroup(of: BulkheadPermit?.self) { group in
            // The timer gives up on the wait; the grant path hands over a released slot.
            group.addTask {
                // Cancelled (slot granted, or the caller cancelled): the waiter side settles it.
                do { try await clock.sleep(for: maxWait) } catch { return nil }
                self.abandon(id: id, key: key, error: ToolOpsError(.bulkheadFull, "no slot in bulkhead \(key) within \(maxWait) (\(limit) in use)"))
                return nil
            }
            group.addTask {
                try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { (waiter: Waiter) in
                        let early: Result<BulkheadPermit, any Error>? = self.state.withLock { state in
                            if let settled = state.settled.removeValue(forKey: id) { return settled }
                            guard let index = state.compartments[key]?.queue.firstIndex(where: { $0.id == id }) else {
                                return .failure(CancellationError())  // cannot happen: entries leave via `settled`
                            }
                            state.compartments[key]?.queue[index].waiter = waiter
                            return nil
                        }
                        if let early { waiter.resume(with: early) }
                    }
                } onCancel: {
                    self.abandon(id: id, key: key, error: CancellationError())
                }
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let permit = result { return permit }
            }
            throw CancellationError()
        }
    }

    /// Removes a waiter that timed out or was cancelled (if it is still waiting).
    private func abandon(id: UInt64, key: String, error: any Error) {
        let waiter: Waiter? = state.withLock { state in
            guard let index = state.compartments[key]?.queue.firstIndex(where: { $0.id == id }),
                let entry = state.compartments[key]?.queue.remove(at: index)
            else { return nil }
            if entry.waiter == nil { state.settled[id] = .failure(error) }
            return entry.waiter
        }
        waiter?.resume(throwing: error)
    }

    public func release(_ permit: BulkheadPermit) async { releaseNow(permit) }

    package func releaseNow(_ permit: BulkheadPermit) {
        let handOver: (Waiter, BulkheadPermit)? = state.withLock { state in
            // One hash lookup for the whole release.
            guard let index = state.compartments.index(forKey: permit.key),
                state.compartments.values[index].held.remove(permit.token) != nil
            else { return nil }
            if state.compartments.values[index].queue.isEmpty {
                if state.compartments.values[index].held.isEmpty {
                    if state.compartments.count > Self.keptCompartments {
                        state.compartments.remove(at: index)
                    } else {
                        state.idleKept = true
                    }
                }
                return nil
            }
            let next = state.compartments.values[index].queue.removeFirst()
            state.compartments.values[index].held.insert(next.id)
            let granted = BulkheadPermit(key: permit.key, token: next.id)
            guard let waiter = next.waiter else {
                state.settled[next.id] = .success(granted)  // its continuation is about to arrive
                return nil
            }
            return (waiter, granted)
        }
        if let (waiter, granted) = handOver { waiter.resume(returning: granted) }
    }

    /// Drops every idle compartment (no slot held, nobody waiting); returns how many.
    @discardableResult
    public func sweep() -> Int {
        state.withLock { state in
            let before = state.compartments.count
            state.compartments = state.compartments.filter { !$0.value.held.isEmpty || !$0.value.queue.isEmpty }
            return before - state.compartments.count
        }
    }

    /// Compartments held now (idle ones included, up to 1,024).
    public var keyCount: Int { state.withLock { $0.compartments.count } }

    /// Slots in use for `key`.
    public func inUse(_ key: String) -> Int { state.withLock { $0.compartments[key]?.held.count ?? 0 } }
    /// Callers waiting for `key`.
    public func waiting(_ key: String) -> Int { state.withLock { $0.compartments[key]?.queue.count ?? 0 } }
}
