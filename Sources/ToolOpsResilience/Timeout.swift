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
        // The work runs as a child task, cancelled and awaited at the deadline.
        guard let result = try await withDeadline(limit, clock: clock, watched: watched, { try await next.run(call) }) else {
            configuration.observer?(.timedOut(tool: call.tool, after: limit, shadow: false))
            throw ToolOpsError(.timedOut, "\(call.tool) exceeded its timeout of \(limit)")
        }
        return result
    }
}
