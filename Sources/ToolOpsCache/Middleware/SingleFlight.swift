import Synchronization

/// Coalesces concurrent work per key inside one process: the first caller (the leader) runs
/// it, later callers wait for the leader's outcome. A cancelled follower stops waiting and
/// leaves the others undisturbed; a leader that was cancelled hands its followers a
/// `CancellationError`, which ``CacheMiddleware`` answers by electing a new leader.
final class SingleFlight<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    typealias Outcome = Result<Value, any Error>
    enum Role {
        case leader
        case follower(Outcome)
    }

    struct State {
        var flights: [Key: [UInt64: CheckedContinuation<Outcome?, Never>]] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    /// Joins the flight for `key`: `.leader` means the caller must do the work and then
    /// call ``finish(_:with:)``; otherwise the leader's outcome.
    func join(_ key: Key) async -> Role {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        let outcome: Outcome? = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Outcome?, Never>) in
                let immediate: Outcome?? = state.withLock { state in
                    guard state.flights[key] != nil else {
                        state.flights[key] = [:]
                        return .some(nil)
                    }
                    if Task.isCancelled { return .some(.failure(CancellationError())) }
                    state.flights[key]?[id] = continuation
                    return .none
                }
                if case .some(let value) = immediate { continuation.resume(returning: value) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.flights[key]?.removeValue(forKey: id) }
            waiter?.resume(returning: .failure(CancellationError()))
        }
        guard let outcome else { return .leader }
        return .follower(outcome)
    }

    /// Only for the leader: ends the flight and hands `outcome` to every follower.
    func finish(_ key: Key, with outcome: Outcome) {
        let waiters = state.withLock { $0.flights.removeValue(forKey: key) } ?? [:]
        for waiter in waiters.values { waiter.resume(returning: outcome) }
    }

    /// Starts a flight only if none is running (for background refreshes). `false`: one is.
    func tryLead(_ key: Key) -> Bool {
        state.withLock { state in
            guard state.flights[key] == nil else { return false }
            state.flights[key] = [:]
            return true
        }
    }

    var activeFlights: Int { state.withLock { $0.flights.count } }

    /// Callers waiting for the leader of `key`'s flight.
    func followers(of key: Key) -> Int { state.withLock { $0.flights[key]?.count ?? 0 } }
}
