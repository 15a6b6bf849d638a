import Synchronization
import ToolOpsCore
#if canImport(Glibc)
import Glibc
#endif

/// Cancels tasks whose deadline has passed, from one background thread.
///
/// Registering costs a lock and a dictionary insert — no timer per call — which is what
/// makes ``TimeoutMiddleware`` cheap on ``SystemClock``. The thread sleeps in `poll` until
/// the earliest deadline; a new deadline earlier than that wakes it through a pipe.
final class DeadlineWatcher: Sendable {
    /// `@unchecked Sendable`: an `UnsafeCurrentTask` may not outlive its task. Entries are
    /// removed (under the lock) before the task's registration scope ends, and the watcher
    /// only calls `cancel()` under that same lock, so it never touches a finished task.
    struct Entry: @unchecked Sendable {
        var deadline: Int64
        var task: UnsafeCurrentTask
    }

    struct State {
        var entries: [UInt64: Entry] = [:]
        var fired: Set<UInt64> = []
        var nextID: UInt64 = 0
        var earliest: Int64 = .max
    }

    static let shared = DeadlineWatcher()

    private let state = Mutex(State())
    private let wakeRead: Int32
    private let wakeWrite: Int32

    private init() {
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
            _ = fcntl(fds[1], F_SETFL, O_NONBLOCK)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    /// Whether the watcher can run (it needs a pipe and a thread).
    var isAvailable: Bool { wakeRead >= 0 }

    /// Runs `body` with the current task registered for cancellation at `deadline`
    /// (host monotonic nanoseconds). Returns the body's result and whether the deadline fired.
    func withDeadline<T>(_ deadline: Int64, _ body: () async throws -> T) async -> (Result<T, any Error>, fired: Bool) {
        let id: UInt64? = withUnsafeCurrentTask { task in
            guard let task else { return nil }
            let (id, wake) = state.withLock { state -> (UInt64, Bool) in
                state.nextID += 1
                state.entries[state.nextID] = Entry(deadline: deadline, task: task)
                // Only a deadline earlier than the one the thread sleeps towards needs a wake-up.
                let wake = deadline < state.earliest
                state.earliest = min(state.earliest, deadline)
                return (state.nextID, wake)
            }
            if wake { signal() }
            return id
        }
        let result: Result<T, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        guard let id else { return (result, false) }
        let fired = state.withLock { state -> Bool in
            state.entries[id] = nil
            return state.fired.remove(id) != nil
        }
        return (result, fired)
    }

    private func signal() {
        // The thread starts with the first registration.
        if threadStarted.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged { startThread() }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    private let threadStarted = Atomic<Bool>(false)

    private func startThread() {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        defer { pthread_attr_destroy(&attributes) }
        _ = pthread_create(&thread, &attributes, { raw in
            guard let raw else { return nil }
            Unmanaged<DeadlineWatcher>.fromOpaque(raw).takeRetainedValue().loop()
            return nil
        }, context)
    }

    private func loop() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while true {
            let now = SystemClock().now.nanoseconds
            let nextDeadline = state.withLock { state -> Int64 in
                var earliest = Int64.max
                for (id, entry) in state.entries {
                    if entry.deadline <= now {
                        if state.fired.insert(id).inserted { entry.task.cancel() }
                    } else {
                        earliest = min(earliest, entry.deadline)
                    }
                }
                state.earliest = earliest
                return earliest
            }
            let timeout: Int32
            if nextDeadline == .max {
                timeout = -1
            } else {
                timeout = Int32(clamping: (nextDeadline - now) / 1_000_000 + 1)
            }
            var pfd = pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, timeout) > 0 {
                while buffer.withUnsafeMutableBytes({ read(wakeRead, $0.baseAddress, $0.count) }) > 0 {}
            }
        }
    }
}

/// Runs `body` as a child task, giving up after `duration` on `clock`: returns `nil` then (the
/// work is cancelled and awaited; nothing keeps running). A body that finishes successfully
/// despite the deadline keeps its result. On ``SystemClock`` the shared ``DeadlineWatcher``
/// cancels it (no timer per call); other clocks race it against a sleep on that clock.
/// Used by the timeout middleware and the fallback stores' per-call deadline.
func withDeadline<T: Sendable>(
    _ duration: Duration, clock: any ToolOpsClock, _ body: @escaping @Sendable () async throws -> T
) async throws -> T? {
    if clock is SystemClock && DeadlineWatcher.shared.isAvailable {
        let deadline = (clock.now + duration).nanoseconds
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                let (result, fired) = await DeadlineWatcher.shared.withDeadline(deadline) { try await body() }
                if fired, case .failure = result { return nil }
                return try result.get()
            }
            return try await group.next() ?? nil
        }
    }
    return try await withThrowingTaskGroup(of: T??.self) { group in
        group.addTask { .some(try await body()) }
        group.addTask {
            try await clock.sleep(for: duration)
            return .none
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { return nil }
        return first ?? nil
    }
}
