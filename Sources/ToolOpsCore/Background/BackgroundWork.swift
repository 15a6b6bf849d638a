import ServiceLifecycle
import Synchronization

/// Work a call starts and does not wait for — a cache entry refreshed ahead of its expiry —
/// run by a service instead of by unstructured tasks: every job runs in this service's task
/// group (so it is awaited, and cancelled with the service), at most
/// ``Configuration/concurrency`` at once, with at most ``Configuration/maximumPending`` waiting.
///
/// Jobs are taken only while ``run()`` runs: ``submit(_:)`` answers `false` before it starts,
/// after it stopped, and when the queue is full, and the caller then does without (a refresh
/// is skipped; the entry is filled again when it expires). At graceful shutdown no new job is
/// taken and the jobs still queued or running are cancelled — each one is written to end
/// promptly then (a cancelled refresh stores nothing) — and ``run()`` returns once they have.
///
/// ```swift
/// let background = try BackgroundWork()
/// let cache = try CacheMiddleware(.init(policy: policy, background: background), store: store)
/// let group = ServiceGroup(services: [background, app], …)
/// ```
public final class BackgroundWork: Service, Sendable {
    public struct Configuration: Sendable {
        /// Jobs running at once. Defaults to 16.
        public var concurrency: Int
        /// Jobs waiting for a turn; a job submitted past this is refused. Defaults to 1,024.
        public var maximumPending: Int

        public init(concurrency: Int = 16, maximumPending: Int = 1024) {
            self.concurrency = concurrency
            self.maximumPending = maximumPending
        }
    }

    /// A job: it must end promptly once its task is cancelled.
    public typealias Job = @Sendable () async -> Void

    public let configuration: Configuration

    private struct State {
        var phase = Phase.idle
        var pending = FIFOQueue<Job>()
        /// ``run()`` waits here for a job, a free place, or the end.
        var waiter: CheckedContinuation<Void, Never>?
        /// Jobs started and not yet ended.
        var running = 0

        var pendingCount: Int { pending.count }

        mutating func takeNext() -> Job? { pending.popFirst() }

        /// Wakes ``run()`` if it waits.
        mutating func wake() -> CheckedContinuation<Void, Never>? {
            defer { waiter = nil }
            return waiter
        }
    }

    private enum Phase {
        case idle, running, stopped
    }

    private let state = Mutex(State())

    public init(_ configuration: Configuration = .init()) throws(ToolOpsError) {
        guard configuration.concurrency >= 1, configuration.maximumPending >= 1 else {
            throw ToolOpsError(.invalidConfiguration, "BackgroundWork needs a concurrency and a maximumPending of at least 1")
        }
        self.configuration = configuration
    }

    /// Queues `job`; `false` (and the job is dropped, never run) when ``run()`` is not running
    /// or ``Configuration/maximumPending`` jobs already wait.
    @discardableResult
    public func submit(_ job: @escaping Job) -> Bool {
        let (accepted, waiter) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
            guard state.phase == .running, state.pendingCount < configuration.maximumPending else { return (false, nil) }
            state.pending.append(job)
            return (true, state.wake())
        }
        waiter?.resume()
        return accepted
    }

    /// Jobs queued and not yet started (for tests and diagnostics).
    public var pendingJobs: Int { state.withLock { $0.pendingCount } }

    /// Jobs started and not yet ended (for tests and diagnostics).
    public var runningJobs: Int { state.withLock { $0.running } }

    /// Runs the submitted jobs until graceful shutdown or cancellation; then cancels the jobs
    /// still queued or running and returns when they have ended. Runs once.
    public func run() async throws {
        try state.withLock { state throws(ToolOpsError) in
            guard state.phase == .idle else { throw ToolOpsError(.invalidConfiguration, "a BackgroundWork runs once") }
            state.phase = .running
        }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                while let (job, stopped) = await nextJob() {
                    // Jobs queued before the stop still run, cancelled (so each ends at once):
                    // dropping one could leave whoever waits on its outcome waiting.
                    if stopped { group.cancelAll() }
                    group.addTask {
                        await job()
                        self.jobEnded()
                    }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: { [self] in
            stop()
        }
        stop()
    }

    /// The next job to start, once fewer than ``Configuration/concurrency`` run (counted as
    /// running from now), and whether the service has stopped; `nil` once stopped and empty.
    /// Once stopped, queued jobs start at once: they run cancelled and end promptly, and the
    /// jobs that hold the places are cancelled only when the loop sees the stop.
    private func nextJob() async -> (Job, stopped: Bool)? {
        while true {
            enum Next { case job(Job, Bool), end, wait }
            let next = state.withLock { state -> Next in
                if state.running < configuration.concurrency || state.phase == .stopped, let job = state.takeNext() {
                    state.running += 1
                    return .job(job, state.phase == .stopped)
                }
                return state.phase == .stopped && state.pendingCount == 0 ? .end : .wait
            }
            switch next {
            case .job(let job, let stopped): return (job, stopped)
            case .end: return nil
            case .wait: break
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let resumeNow = state.withLock { state -> Bool in
                        // Resumed at once when a job can start or the service has stopped.
                        let canStart = state.running < configuration.concurrency && state.pendingCount > 0
                        guard !canStart, state.phase != .stopped else { return true }
                        state.waiter = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: { [self] in
                stop()
            }
        }
    }

    private func jobEnded() {
        state.withLock { state in
            state.running -= 1
            return state.wake()
        }?.resume()
    }

    /// Takes no new job, and wakes ``run()`` to wind down.
    private func stop() {
        state.withLock { state in
            state.phase = .stopped
            return state.wake()
        }?.resume()
    }
}

/// A first-in, first-out queue on an array: taken elements are dropped when it empties, and in
/// one move once they make up half of it, so a queue that never empties stays bounded too.
struct FIFOQueue<Element> {
    private var elements: [Element] = []
    private var head = 0

    var count: Int { elements.count - head }

    /// What the array holds, taken elements included (for tests of the bound).
    var storedCount: Int { elements.count }

    mutating func append(_ element: Element) { elements.append(element) }

    mutating func popFirst() -> Element? {
        guard head < elements.count else { return nil }
        let element = elements[head]
        head += 1
        if head == elements.count {
            elements.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= elements.count {
            elements.removeFirst(head)
            head = 0
        }
        return element
    }
}
