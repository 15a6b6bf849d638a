import Synchronization
import ToolOpsCore

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
    /// The same store when it can sometimes grant at once (Redis: a kept slot).
    let locallyAcquiring: (any LocallyAcquiringBulkheadStore)?

    public init(_ configuration: Configuration, store: any BulkheadStore = MemoryBulkheadStore()) throws(ToolOpsError) {
        try requireConfiguration(configuration.maxConcurrent >= 1, "maxConcurrent must be at least 1, got \(configuration.maxConcurrent)")
        try requireConfiguration(configuration.maxWait >= .zero, "maxWait must not be negative")
        try requireConfiguration(configuration.lease > .zero, "lease must be positive")
        self.configuration = configuration
        self.store = store
        self.synchronousStore = store as? any SynchronousBulkheadStore
        self.locallyAcquiring = store as? any LocallyAcquiringBulkheadStore
        self.storeKeyPrefix = "\(configuration.keyPrefix):\(configuration.key):"
    }

    let storeKeyPrefix: String

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        let key = storeKeyPrefix + configuration.key.key(for: call)
        let shadow = configuration.mode.isShadow
        let observer = configuration.observer
        if let synchronousStore, let permit = synchronousStore.acquireNow(key: key, limit: configuration.maxConcurrent) {
            observer?(.bulkheadAcquired(tool: call.tool, key: key))
            let result: Result<ToolResult, any Error>
            do { result = .success(try await next.run(call)) } catch { result = .failure(error) }
            synchronousStore.releaseNow(permit)
            observer?(.bulkheadReleased(tool: call.tool, key: key))
            return try result.get()
        }
        var permit: BulkheadPermit?
        let maxWait = shadow ? .zero : configuration.maxWait
        do {
            if maxWait == .zero, let local = locallyAcquiring?.acquireLocally(key: key, limit: configuration.maxConcurrent, lease: configuration.lease) {
                permit = local
            } else {
                permit = try await store.acquire(key: key, limit: configuration.maxConcurrent, lease: configuration.lease, maxWait: maxWait)
            }
        } catch let error as ToolOpsError where error.code == .bulkheadFull {
            configuration.observer?(.bulkheadRejected(tool: call.tool, key: key, shadow: shadow))
            if !shadow { throw error }
        }
        if permit != nil { observer?(.bulkheadAcquired(tool: call.tool, key: key)) }
        let result: Result<ToolResult, any Error>
        if let permit, store.leasesExpire, !permit.renewedByStore, !store.renewsLease(of: permit) {
            result = await runRenewing(permit) { try await next.run(call) }
        } else {
            do { result = .success(try await next.run(call)) } catch { result = .failure(error) }
        }
        if let permit {
            await store.release(permit)
            observer?(.bulkheadReleased(tool: call.tool, key: key))
        }
        return try result.get()
    }

    /// Runs `body` while renewing the permit's lease every third of it, so a call that runs
    /// longer than the lease keeps its slot (an expired lease would let the bulkhead admit one
    /// call too many). A lease found lapsed is not renewed further.
    ///
    /// Most calls end long before a third of their lease: renewals start only when one is
    /// still running then, by the shared deadline watcher — no child task and timer per call
    /// (they were a third of a call's CPU on Redis).
    func runRenewing(_ permit: BulkheadPermit, _ body: () async throws -> ToolResult) async -> Result<ToolResult, any Error> {
        let (store, lease) = (self.store, configuration.lease)
        let renewal = LeaseRenewal {
            Task {
                while true {
                    do {
                        if try await store.renew(permit, lease: lease) == false { return }
                    } catch is CancellationError {
                        return
                    } catch {
                        // Unreachable store: try again at the next third; the lease may still hold.
                    }
                    do { try await Task.sleep(for: lease / 3) } catch { return }
                }
            }
        }
        let watcher = DeadlineWatcher.shared
        guard DeadlineWatcher.canWatch(SystemClock()) else {
            // No watcher to be had (no thread or pipe): a child task starts the renewals.
            async let _: Void = {
                do { try await Task.sleep(for: lease / 3) } catch { return }
                renewal.cancel()
            }()
            let result: Result<ToolResult, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            await renewal.finish()
            return result
        }
        let slot = watcher.register((SystemClock().now + lease / 3).nanoseconds, renewal)
        let result: Result<ToolResult, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        _ = watcher.unregister(slot)
        await renewal.finish()
        return result
    }
}

/// The renewals of one call's lease, started when its first third has passed (the deadline
/// watcher "cancels" it then: ``cancel()`` starts them). The renewal task is unstructured only
/// in name: ``finish()`` — always called when the call ends — cancels and awaits it.
final class LeaseRenewal: CancellableTask {
    private let state = Mutex<(task: Task<Void, Never>?, ended: Bool)>((nil, false))
    private let start: @Sendable () -> Task<Void, Never>

    init(_ start: @escaping @Sendable () -> Task<Void, Never>) {
        self.start = start
    }

    /// Starts renewing (once; not after the call ended).
    func cancel() {
        state.withLock { state in
            if !state.ended && state.task == nil { state.task = start() }
        }
    }

    /// The call ended: stops renewing and waits until the renewals have stopped.
    func finish() async {
        let task = state.withLock { state in
            state.ended = true
            return state.task
        }
        task?.cancel()
        await task?.value
    }
}
