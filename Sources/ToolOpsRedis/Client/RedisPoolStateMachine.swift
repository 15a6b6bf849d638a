/// A connection as the pool sees it: an id that tells this connection from the next one in
/// the same slot.
protocol PooledConnection {
    var id: Int { get }
}

/// What a connection reports when the pool looks at it.
struct PooledConnectionStatus {
    /// Set once it has closed (its close callback may not have run yet).
    var closedError: RedisClientError?
    /// Closing after its in-flight commands.
    var closing: Bool
    /// Commands waiting or in flight.
    var load: Int
}

/// The pool's slots as a value: which connection each holds, its failures and backoff, and the
/// choice of connection for a command. ``RedisClient`` keeps it behind a `Mutex` and does what
/// the choice says (use a connection, or open one in a slot); the choice is tested without a
/// server.
struct RedisPoolStateMachine<Connection: PooledConnection> {
    struct Slot {
        var connection: Connection?
        var consecutiveFailures = 0
        var retryAt: ContinuousClock.Instant?
        var lastError: RedisClientError?
    }

    enum Choice {
        case use(Connection)
        /// Open a connection in this free slot and ``assign(_:to:)`` it.
        case open(slot: Int)
        case fail(RedisClientError)
    }

    private(set) var slots: [Slot]
    private(set) var isShutDown = false

    init(size: Int) { slots = Array(repeating: Slot(), count: size) }

    /// Picks a connection: the first live one with fewer than `threshold` commands in flight
    /// (filling one connection first gives the biggest pipelined batches); when all are that
    /// busy, a free slot (one not backing off) to open a new one in; failing that, the least
    /// loaded unless it already has `maximum` (then ``RedisClientError/Code/overloaded``);
    /// failing that, the last connection error of a slot that is backing off.
    /// Closed connections found on the way are accounted for (see ``closed(slot:id:error:now:backoff:)``).
    mutating func choose(
        now: ContinuousClock.Instant, threshold: Int, maximum: Int = .max, backoff: (Int) -> Duration,
        status: (Connection) -> PooledConnectionStatus
    ) -> Choice {
        if isShutDown { return .fail(RedisClientError(.clientClosed, "the Redis client was shut down")) }
        var leastLoaded: (connection: Connection, load: Int)? = nil
        var free: Int? = nil
        var backoffError: RedisClientError? = nil
        for index in slots.indices {
            if let connection = slots[index].connection {
                let status = status(connection)  // one lock per connection on this hot path
                if let error = status.closedError {
                    // Closed but its close callback has not run yet: account for it here, so a
                    // burst of callers cannot skip the backoff.
                    closed(slot: index, id: connection.id, error: error, now: now, backoff: backoff)
                } else if !status.closing {
                    if status.load < threshold { return .use(connection) }
                    if leastLoaded.map({ status.load < $0.load }) ?? true { leastLoaded = (connection, status.load) }
                    continue
                }
            }
            if let retryAt = slots[index].retryAt, retryAt > now {
                backoffError = backoffError ?? slots[index].lastError
            } else if free == nil {
                free = index
            }
        }
        if let free { return .open(slot: free) }
        if let leastLoaded {
            if leastLoaded.load >= maximum {
                return .fail(RedisClientError(.overloaded, "every Redis connection has \(maximum) commands waiting (maximumCommandsPerConnection)"))
            }
            return .use(leastLoaded.connection)
        }
        return .fail(backoffError ?? RedisClientError(.connectionRefused, "no Redis connection available"))
    }

    /// A connection opened for ``Choice/open(slot:)`` now occupies the slot.
    mutating func assign(_ connection: Connection, to slot: Int) { slots[slot].connection = connection }

    /// The connection `id` of `slot` completed its handshake: its slot's failures are forgiven.
    mutating func opened(slot: Int, id: Int) {
        guard slots[slot].connection?.id == id else { return }
        slots[slot].consecutiveFailures = 0
        slots[slot].retryAt = nil
        slots[slot].lastError = nil
    }

    /// Frees the slot of a closed connection (once per connection) and schedules the next
    /// attempt: `backoff(failures before this one)` from now — at once after a working
    /// connection broke, with growing delays after failed attempts. Returns the delay, or
    /// `nil` if already accounted for (or the pool is shut down).
    @discardableResult
    mutating func closed(
        slot: Int, id: Int, error: RedisClientError, now: ContinuousClock.Instant, backoff: (Int) -> Duration
    ) -> Duration? {
        guard slots[slot].connection?.id == id else { return nil }
        slots[slot].connection = nil
        slots[slot].lastError = error
        if isShutDown { return nil }
        slots[slot].consecutiveFailures += 1
        let delay = backoff(slots[slot].consecutiveFailures - 1)
        slots[slot].retryAt = delay > .zero ? now.advanced(by: delay) : nil
        return delay
    }

    /// No more connections; returns the ones to close.
    mutating func shutDown() -> [Connection] {
        isShutDown = true
        return slots.compactMap(\.connection)
    }
}
