import Synchronization
import ToolOpsCache
import ToolOpsCore
import ToolOpsRedis

/// Wake-ups by key with a timeout, for fill waiters.
final class KeyedSignals<Key: Hashable & Sendable>: Sendable {
    struct State {
        var waiters: [Key: [UInt64: CheckedContinuation<Bool, Never>]] = [:]
        var nextID: UInt64 = 0
    }
    private let state = Mutex(State())

    /// `true` if signalled within `timeout`, `false` on timeout or cancellation.
    func wait(_ key: Key, timeout: Duration) async -> Bool {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                        let cancelled = self.state.withLock { state -> Bool in
                            if Task.isCancelled { return true }
                            state.waiters[key, default: [:]][id] = continuation
                            return false
                        }
                        if cancelled { continuation.resume(returning: false) }
                    }
                } onCancel: {
                    self.resume(key, id, false)
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    private func resume(_ key: Key, _ id: UInt64, _ value: Bool) {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            let waiter = state.waiters[key]?.removeValue(forKey: id)
            if state.waiters[key]?.isEmpty == true { state.waiters[key] = nil }
            return waiter
        }
        waiter?.resume(returning: value)
    }

    func signal(_ key: Key) {
        let waiters = state.withLock { $0.waiters.removeValue(forKey: key) } ?? [:]
        for waiter in waiters.values { waiter.resume(returning: true) }
    }

    func signalAll() {
        let all = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            defer { state.waiters.removeAll() }
            return state.waiters.values.flatMap(\.values)
        }
        for waiter in all { waiter.resume(returning: true) }
    }
}
