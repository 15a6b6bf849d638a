import Logging
import Synchronization

/// Which node's pool runs a command: the one server, the master of the command's slot on a
/// Redis Cluster, or the master Sentinel names. Keeps the pools, the slot map (cluster) or
/// the master's address (Sentinel), and refreshes them — one refresh at a time, the callers
/// that need it waiting for it.
final class RedisRouter: Sendable {
    typealias Endpoint = RedisConfiguration.Endpoint

    struct State {
        var pools: [Endpoint: RedisNodePool] = [:]
        /// Cluster: the slot map.
        var slots = RedisClusterTopology() {
            didSet { slotPools = [] }
        }
        /// Cluster: each slot's pool, filled as commands ask (no hashing of endpoints per
        /// command); emptied whenever the map changes.
        var slotPools: [RedisNodePool?] = []
        /// Sentinel: the master's address once known.
        var master: Endpoint?
        /// A refresh is asked for or under way (see ``refresh()``).
        var refreshing = false
        /// The client's service runs the refreshes (``runRefreshes()``); without it, the
        /// caller that asks for one performs it.
        var serviceRunning = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
        var lastRefresh: ContinuousClock.Instant?
        /// A reply or failure said the layout changed: refresh at the next chance.
        var refreshWanted = false
        var lastRefreshError: RedisClientError?
        var isShutDown = false
        /// Which node the next pub/sub connection tries (cluster).
        var rotation = 0
    }

    let configuration: RedisConfiguration
    /// The pool of a standalone client (no lock on its hot path).
    let standalone: RedisNodePool?
    private let state = Mutex(State())
    private let makePool: @Sendable (Endpoint) -> RedisNodePool
    private let logger: Logger
    private let askSentinels: @Sendable () async throws(RedisClientError) -> Endpoint
    /// Refreshes asked of ``runRefreshes()``; one at a time is asked for (``State/refreshing``).
    private let refreshRequests = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    init(
        configuration: RedisConfiguration, logger: Logger, makePool: @escaping @Sendable (Endpoint) -> RedisNodePool,
        askSentinels: @escaping @Sendable () async throws(RedisClientError) -> Endpoint
    ) {
        self.configuration = configuration
        self.makePool = makePool
        self.logger = logger
        self.askSentinels = askSentinels
        if case .standalone = configuration.topology {
            standalone = makePool(configuration.endpoint)
        } else {
            standalone = nil
        }
    }

    var isCluster: Bool { configuration.topology.isCluster }

    // MARK: routing

    /// The pool for a command with `routing`; refreshes first when the layout is not known yet.
    /// `evenIfCancelled`: wait for that refresh even when the caller is cancelled (for commands
    /// that must run regardless, such as giving a slot back).
    func pool(for routing: CommandRouting, evenIfCancelled: Bool = false) async throws(RedisClientError) -> RedisNodePool {
        if let standalone { return standalone }
        if let pool = try knownPool(for: routing) { return pool }
        // Not for every command: a refresh under way is joined, and one that just failed is
        // not repeated within 100 ms (its error is returned).
        if refreshDue(now: .now, unknown: true) || isRefreshing {
            await refresh(cancellable: !evenIfCancelled)
        }
        if let pool = try knownPool(for: routing) { return pool }
        throw unknownLayoutError(for: routing)
    }

    /// The pool for `routing` without waiting: `nil` when the layout is not known yet.
    func knownPool(for routing: CommandRouting) throws(RedisClientError) -> RedisNodePool? {
        if let standalone { return standalone }
        return try state.withLock { (state) throws(RedisClientError) -> RedisNodePool? in
            if state.isShutDown { throw RedisClientError(.clientClosed, "the Redis client was shut down") }
            let endpoint: Endpoint?
            switch configuration.topology {
            case .standalone:
                endpoint = configuration.endpoint
            case .sentinel:
                endpoint = state.master
            case .cluster:
                switch routing {
                case .anyNode: endpoint = state.slots.masters.first
                case .slot(let slot):
                    if slot < state.slotPools.count, let pool = state.slotPools[slot] { return pool }
                    guard let master = state.slots.master(forSlot: slot) else { return nil }
                    let pool = Self.pool(at: master, in: &state, make: makePool)
                    if state.slotPools.isEmpty { state.slotPools = Array(repeating: nil, count: RedisSlot.count) }
                    state.slotPools[slot] = pool
                    return pool
                case .crossSlot(let message): throw RedisClientError(.crossSlot, message)
                }
            }
            return endpoint.map { Self.pool(at: $0, in: &state, make: makePool) }
        }
    }

    /// The pool of `endpoint` (an `ASK` target, a node to ask for the slot map).
    func pool(at endpoint: Endpoint) throws(RedisClientError) -> RedisNodePool {
        if let standalone, standalone.endpoint == endpoint { return standalone }
        return try state.withLock { (state) throws(RedisClientError) -> RedisNodePool in
            // After shutdown no pool may be made: nothing would ever close it.
            if state.isShutDown { throw RedisClientError(.clientClosed, "the Redis client was shut down") }
            return Self.pool(at: endpoint, in: &state, make: makePool)
        }
    }

    private static func pool(at endpoint: Endpoint, in state: inout State, make: (Endpoint) -> RedisNodePool) -> RedisNodePool {
        if let pool = state.pools[endpoint] { return pool }
        let pool = make(endpoint)
        state.pools[endpoint] = pool
        return pool
    }

    private func unknownLayoutError(for routing: CommandRouting) -> RedisClientError {
        let last = state.withLock { $0.lastRefreshError }
        switch configuration.topology {
        case .cluster:
            if case .slot(let slot) = routing, last == nil {
                return RedisClientError(.serverUnavailable, "CLUSTERDOWN no master serves slot \(slot) in the cluster's slot map")
            }
            return last ?? RedisClientError(.serverUnavailable, "CLUSTERDOWN the cluster's slot map is empty")
        default:
            return last ?? RedisClientError(.connectionRefused, "the Redis master is not known yet")
        }
    }

    /// The endpoint a pub/sub connection should use now: the server, the Sentinel master, or
    /// the cluster's nodes in turn (a cluster forwards every message to every node).
    func subscriptionEndpoint() throws(RedisClientError) -> Endpoint {
        switch configuration.topology {
        case .standalone:
            return configuration.endpoint
        case .sentinel(let name, _):
            guard let master = state.withLock({ $0.master }) else {
                throw RedisClientError(.connectionRefused, "the master of '\(name)' is not known yet")
            }
            return master
        case .cluster(let seeds):
            return state.withLock { state in
                var candidates = state.slots.masters
                for seed in seeds where !candidates.contains(seed) { candidates.append(seed) }
                state.rotation += 1
                return candidates[state.rotation % candidates.count]
            }
        }
    }

    /// Where a leased connection goes: the server, the Sentinel master, or a cluster master.
    func leaseEndpoint() async throws(RedisClientError) -> Endpoint {
        try await pool(for: .anyNode).endpoint
    }

    // MARK: changes

    /// A `MOVED` reply: the slot's master changed. Updates the map at once and asks for a refresh.
    func moved(slot: Int, to endpoint: Endpoint) {
        state.withLock {
            $0.slots.moved(slot: slot, to: endpoint)
            $0.refreshWanted = true
        }
    }

    /// A failure or reply suggests the layout changed (a dead node, `READONLY`): a Sentinel
    /// client forgets the master only once the sentinels are asked again.
    func layoutMayHaveChanged() {
        guard standalone == nil else { return }
        state.withLock { $0.refreshWanted = true }
    }

    /// Whether a refresh is due: wanted after a failure, or the layout is not known (at most
    /// every 100 ms then), or the periodic one.
    func refreshDue(now: ContinuousClock.Instant = .now, unknown: Bool = false) -> Bool {
        guard standalone == nil else { return false }
        return state.withLock { state in
            guard !state.refreshing, !state.isShutDown else { return false }
            guard let last = state.lastRefresh else { return true }
            if state.refreshWanted || unknown { return now - last >= .milliseconds(100) }
            return now - last >= configuration.topologyRefreshInterval
        }
    }

    private var isRefreshing: Bool { state.withLock { $0.refreshing } }

    /// Refreshes when ``refreshDue(now:unknown:)``.
    func refreshIfDue() async {
        if refreshDue() { await refresh() }
    }

    /// Reads the layout again (`CLUSTER SLOTS` from the first node that answers; the sentinels'
    /// master) and returns when it is done — or, if `cancellable`, when the caller is cancelled.
    ///
    /// One refresh at a time: callers arriving during one wait for it. The client's service
    /// performs it (``runRefreshes()``), so that a caller's cancellation (a store's failover
    /// deadline) does not fail it for the others; it is bounded (each node is asked within the
    /// connect and command timeouts). A client whose service is not running has the caller
    /// perform it.
    func refresh(cancellable: Bool = true) async {
        guard standalone == nil else { return }
        enum Start { case none, join, service, inline }
        let start = state.withLock { state -> Start in
            if state.isShutDown { return .none }
            if state.refreshing { return .join }
            state.refreshing = true
            return state.serviceRunning ? .service : .inline
        }
        switch start {
        case .none: return
        case .join: await waitForRefresh(cancellable: cancellable)
        case .service:
            refreshRequests.continuation.yield()
            await waitForRefresh(cancellable: cancellable)
        case .inline: await performRefresh()
        }
    }

    /// Performs the refreshes callers ask for, one at a time, until cancelled (the client's
    /// service runs it). Ending, it releases the callers of one asked for and not performed.
    /// A second one at the same time (the client's service and a backend's both running)
    /// returns at once: one consumer only.
    func runRefreshes() async {
        let first = state.withLock { state -> Bool in
            if state.serviceRunning { return false }
            state.serviceRunning = true
            return true
        }
        guard first else { return }
        for await _ in refreshRequests.stream {
            if Task.isCancelled { break }
            await performRefresh()
        }
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.serviceRunning = false
            guard state.refreshing else { return [] }
            state.refreshing = false
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    private func waitForRefresh(cancellable: Bool) async {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        func wait() async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    guard state.refreshing, !(cancellable && Task.isCancelled) else { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        }
        guard cancellable else { return await wait() }
        await withTaskCancellationHandler {
            await wait()
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    private func performRefresh() async {
        let outcome: Result<Void, RedisClientError>
        do throws(RedisClientError) {
            switch configuration.topology {
            case .standalone: break
            case .cluster(let seeds): try await refreshSlots(seeds: seeds)
            case .sentinel: try await refreshMaster()
            }
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.refreshing = false
            state.lastRefresh = .now
            switch outcome {
            case .success:
                state.refreshWanted = false
                state.lastRefreshError = nil
            case .failure(let error):
                state.lastRefreshError = error
            }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
        if case .failure(let error) = outcome, !isShutDown {
            logger.warning("redis topology refresh failed", metadata: ["error": "\(error)"])
        }
    }

    private func refreshSlots(seeds: [Endpoint]) async throws(RedisClientError) {
        let known = state.withLock { $0.slots.nodes }
        var candidates = known
        for seed in seeds where !candidates.contains(seed) { candidates.append(seed) }
        var lastError = RedisClientError(.connectionRefused, "no cluster node reachable")
        let command = RedisCommand("CLUSTER", "SLOTS")
        for node in candidates {
            do {
                let reply = try await pool(at: node).connection().execute(command.encoded, replies: 1)
                if case .error(let message) = reply {
                    lastError = RedisClientError.reply(message)
                    continue
                }
                let slots = try RedisClusterTopology(clusterSlots: reply, queried: node)
                guard !slots.masters.isEmpty else {
                    lastError = RedisClientError(.serverUnavailable, "CLUSTERDOWN \(node) knows no slot's master")
                    continue
                }
                let retired = state.withLock { state -> [RedisNodePool] in
                    if state.isShutDown { return [] }
                    let changed = state.slots != slots
                    state.slots = slots
                    if changed {
                        logger.info(
                            "redis cluster slot map", metadata: ["redis.masters": "\(slots.masters.map(\.description))"])
                    }
                    // Pools of nodes no longer in the cluster (seeds are kept to find it again).
                    let keep = Set(slots.nodes + seeds)
                    let gone = state.pools.keys.filter { !keep.contains($0) }
                    return gone.compactMap { state.pools.removeValue(forKey: $0) }
                }
                for pool in retired { pool.shutdown() }
                return
            } catch let error as RedisClientError {
                lastError = error
            } catch {
                throw RedisClientError(.clientClosed, "cancelled while reading the cluster's slot map")
            }
        }
        throw lastError
    }

    private func refreshMaster() async throws(RedisClientError) {
        let master = try await askSentinels()
        let retired = state.withLock { state -> RedisNodePool? in
            guard state.master != master, !state.isShutDown else { return nil }
            let old = state.master
            state.master = master
            logger.info("redis master", metadata: ["redis.master": "\(master)", "redis.previous": "\(old.map(\.description) ?? "none")"])
            return old.flatMap { state.pools.removeValue(forKey: $0) }
        }
        retired?.shutdown()
    }

    // MARK: pools

    var pools: [RedisNodePool] {
        if let standalone { return [standalone] }
        return state.withLock { Array($0.pools.values) }
    }

    var isShutDown: Bool {
        if let standalone { return standalone.isShutDown }
        return state.withLock { $0.isShutDown }
    }

    /// The masters of the slot map (cluster), the master (Sentinel) or the server.
    var masters: [Endpoint] {
        switch configuration.topology {
        case .standalone: return [configuration.endpoint]
        case .sentinel: return state.withLock { $0.master.map { [$0] } ?? [] }
        case .cluster: return state.withLock { $0.slots.masters }
        }
    }

    func shutdown() {
        let pools = state.withLock { state -> [RedisNodePool] in
            state.isShutDown = true
            return Array(state.pools.values)
        }
        for pool in pools { pool.shutdown() }
        standalone?.shutdown()
    }
}
