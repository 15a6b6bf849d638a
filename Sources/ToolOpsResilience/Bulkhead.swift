import Synchronization
import ToolOpsCore

/// A slot in a bulkhead, returned to the store when the call ends.
public struct BulkheadPermit: Sendable, Hashable {
    public var key: String
    /// Unique per acquisition (a fencing token): releasing a permit twice, or releasing one
    /// that expired and was re-issued, can never free somebody else's slot.
    public var token: UInt64
    public init(key: String, token: UInt64) {
        self.key = key
        self.token = token
    }
}

/// Where bulkhead occupancy lives.
public protocol BulkheadStore: Sendable {
    /// Takes one of `limit` slots for `key`, waiting up to `maxWait` in FIFO order; throws
    /// ``ToolOpsError/Code/bulkheadFull`` when none frees up in time. `lease` bounds how long
    /// a permit of a crashed holder keeps its slot (stores shared between processes).
    func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit
    /// Returns a slot. Unknown or already released permits are ignored.
    func release(_ permit: BulkheadPermit) async
}

/// A bulkhead store that can take a free slot and release one without waiting (state in this
/// process). The middleware calls it directly on that path, saving two async calls per call.
package protocol SynchronousBulkheadStore: BulkheadStore {
    /// A permit if a slot is free and nobody is queued; `nil` means "ask
    /// ``BulkheadStore/acquire(key:limit:lease:maxWait:)``" (it refuses or queues).
    func acquireNow(key: String, limit: Int) -> BulkheadPermit?
    func releaseNow(_ permit: BulkheadPermit)
}

/// Bulkhead slots in this process, with a FIFO wait queue. The default store.
public final class MemoryBulkheadStore: SynchronousBulkheadStore {
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
    }
    private let state = Mutex(State())
    private let clock: any ToolOpsClock

    public init(clock: any ToolOpsClock = SystemClock()) { self.clock = clock }

    public func acquire(key: String, limit: Int, lease: Duration, maxWait: Duration) async throws -> BulkheadPermit {
        let immediate: Immediate = state.withLock { state in
            state.nextToken += 1
            let token = state.nextToken
            // Mutated in place: copying the compartment out would copy its set on every call.
            return Self.take(&state.compartments[key, default: Compartment()], token: token, key: key, limit: limit, maxWait: maxWait)
        }
        switch immediate {
        case .permit(let permit): return permit
        case .full: throw ToolOpsError(.bulkheadFull, "bulkhead \(key) is full (\(limit) in use)")
        case .wait(let id): return try await wait(id: id, key: key, limit: limit, maxWait: maxWait)
        }
    }

    package func acquireNow(key: String, limit: Int) -> BulkheadPermit? {
        state.withLock { state in
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

    enum Immediate { case permit(BulkheadPermit), full, wait(UInt64) }

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
                if state.compartments.values[index].held.isEmpty && state.compartments.count > Self.keptCompartments {
                    state.compartments.remove(at: index)
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

    /// Slots in use for `key`.
    public func inUse(_ key: String) -> Int { state.withLock { $0.compartments[key]?.held.count ?? 0 } }
    /// Callers waiting for `key`.
    public func waiting(_ key: String) -> Int { state.withLock { $0.compartments[key]?.queue.count ?? 0 } }
}

/// Limits concurrent calls per key, with an optional bounded FIFO wait.
public struct BulkheadMiddleware: ToolMiddleware {
    public struct Configuration: Sendable {
        /// Concurrent calls per key. Defaults to 10.
        public var maxConcurrent: Int
        /// How long a call may wait for a slot. Defaults to zero (refuse at once).
        public var maxWait: Duration
        /// Defaults to one bulkhead per tool.
        public var key: PolicyKey
        /// How long a permit outlives a crashed holder in a shared store. Defaults to 5 minutes.
        public var lease: Duration
        public var mode: PolicyMode
        /// Defaults to `bh`.
        public var keyPrefix: String
        public var observer: ResilienceObserver?
        public init(
            maxConcurrent: Int = 10, maxWait: Duration = .zero, key: PolicyKey = .tool, lease: Duration = .seconds(300),
            mode: PolicyMode = .enforce, keyPrefix: String = "bh", observer: ResilienceObserver? = nil
        ) {
            self.maxConcurrent = maxConcurrent
            self.maxWait = maxWait
            self.key = key
            self.lease = lease
            self.mode = mode
            self.keyPrefix = keyPrefix
            self.observer = observer
        }
    }

    public let configuration: Configuration
    let store: any BulkheadStore
    /// The same store when it can take and release slots without waiting (memory).
    let synchronousStore: (any SynchronousBulkheadStore)?

    public init(_ configuration: Configuration, store: any BulkheadStore = MemoryBulkheadStore()) throws(ToolOpsError) {
        try requireConfiguration(configuration.maxConcurrent >= 1, "maxConcurrent must be at least 1, got \(configuration.maxConcurrent)")
        try requireConfiguration(configuration.maxWait >= .zero, "maxWait must not be negative")
        try requireConfiguration(configuration.lease > .zero, "lease must be positive")
        self.configuration = configuration
        self.store = store
        self.synchronousStore = store as? any SynchronousBulkheadStore
        self.storeKeyPrefix = "\(configuration.keyPrefix):\(configuration.key):"
    }

    let storeKeyPrefix: String

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        let key = storeKeyPrefix + configuration.key.key(for: call)
        let shadow = configuration.mode.isShadow
        if let synchronousStore, let permit = synchronousStore.acquireNow(key: key, limit: configuration.maxConcurrent) {
            let result: Result<ToolResult, any Error>
            do { result = .success(try await next.run(call)) } catch { result = .failure(error) }
            synchronousStore.releaseNow(permit)
            return try result.get()
        }
        var permit: BulkheadPermit?
        do {
            permit = try await store.acquire(
                key: key, limit: configuration.maxConcurrent, lease: configuration.lease,
                maxWait: shadow ? .zero : configuration.maxWait)
        } catch let error as ToolOpsError where error.code == .bulkheadFull {
            configuration.observer?(.bulkheadRejected(tool: call.tool, key: key, shadow: shadow))
            if !shadow { throw error }
        }
        let result: Result<ToolResult, any Error>
        do { result = .success(try await next.run(call)) } catch { result = .failure(error) }
        if let permit { await store.release(permit) }
        return try result.get()
    }
}
