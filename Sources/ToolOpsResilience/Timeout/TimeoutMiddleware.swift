import ToolOpsCore

/// Cancels a call that runs longer than `timeout` and throws ``ToolOpsError/Code/timedOut``.
///
/// The call runs as a child task (structured concurrency): when the time is up it is
/// cancelled and awaited, so nothing keeps running after this returns. A tool that ignores
/// cancellation therefore delays the timeout error until it returns.
public struct TimeoutMiddleware: ToolMiddleware {
    public struct Configuration: Sendable {
        public var timeout: Duration
        /// Per-tool overrides; the most specific matching pattern wins.
        public var overrides: [(pattern: ToolPattern, timeout: Duration)]
        public var mode: PolicyMode
        public var observer: ResilienceObserver?
        public init(
            timeout: Duration = .seconds(30), overrides: [(pattern: ToolPattern, timeout: Duration)] = [],
            mode: PolicyMode = .enforce, observer: ResilienceObserver? = nil
        ) {
            self.timeout = timeout
            self.overrides = overrides
            self.mode = mode
            self.observer = observer
        }
    }

    public let configuration: Configuration
    let clock: any ToolOpsClock

    public init(_ configuration: Configuration, clock: any ToolOpsClock = SystemClock()) throws(ToolOpsError) {
        try requireConfiguration(configuration.timeout > .zero, "timeout must be positive")
        for override in configuration.overrides {
            try requireConfiguration(override.timeout > .zero, "timeout for \(override.pattern) must be positive")
        }
        self.configuration = configuration
        self.clock = clock
        self.watched = DeadlineWatcher.canWatch(clock)
    }

    /// Decided once: whether the shared deadline watcher serves this clock.
    let watched: Bool

    func timedOut(_ call: ToolCall, _ limit: Duration) -> ToolOpsError {
        configuration.observer?(.timedOut(tool: call.tool, after: limit, shadow: false))
        return ToolOpsError(.timedOut, "\(call.tool) exceeded its timeout of \(limit)")
    }

    /// The hot path on ``SystemClock``: the work runs in an immediate task (it starts on this
    /// thread and runs until it first suspends, so a tool that never suspends costs no executor
    /// hop), watched by the shared ``DeadlineWatcher`` instead of a timer per call. The task is
    /// unstructured only in name: it is always awaited here, cancelled with the caller, and it
    /// inherits the caller's priority and task-local values (ServiceContext). The task is made
    /// here rather than through `withDeadline`: one closure instead of two on the hot path.
    func runWatched(_ call: ToolCall, next: any ToolRunner, limit: Duration) async throws -> ToolResult {
        // Already cancelled: nothing to watch; the tool sees the cancellation itself.
        if Task.isCancelled { return try await next.run(call) }
        let deadline = (SystemClock().now + limit).nanoseconds
        let finished = Completion()
        let task = Task.immediate {
            defer { finished.finish() }
            return try await next.run(call)
        }
        guard let value = try await awaitWatched(task, finished: finished, deadline: deadline) else { throw timedOut(call, limit) }
        return value
    }

    public func timeout(for tool: ToolID) -> Duration {
        if configuration.overrides.isEmpty { return configuration.timeout }
        return configuration.overrides.filter { $0.pattern.matches(tool) }
            .max { $0.pattern.specificity < $1.pattern.specificity }?.timeout ?? configuration.timeout
    }

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        let limit = timeout(for: call.tool)
        if configuration.mode.isShadow {
            let started = clock.now
            defer {
                let elapsed = clock.now - started
                if elapsed > limit { configuration.observer?(.timedOut(tool: call.tool, after: elapsed, shadow: true)) }
            }
            return try await next.run(call)
        }
        if watched { return try await runWatched(call, next: next, limit: limit) }
        // Another clock (tests): the work races a sleep on it in a task group.
        guard let result = try await withDeadline(limit, clock: clock, watched: false, { try await next.run(call) }) else {
            throw timedOut(call, limit)
        }
        return result
    }
}
