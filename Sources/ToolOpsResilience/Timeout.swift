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
    }

    public func timeout(for tool: ToolID) -> Duration {
        configuration.overrides.filter { $0.pattern.matches(tool) }
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
        let clock = self.clock
        if clock is SystemClock && DeadlineWatcher.shared.isAvailable {
            // Fast path: the work runs as the only child task and a shared watcher thread
            // cancels it at the deadline — no timer is created per call.
            let deadline = (clock.now + limit).nanoseconds
            return try await withThrowingTaskGroup(of: ToolResult.self) { group in
                group.addTask {
                    let (result, fired) = await DeadlineWatcher.shared.withDeadline(deadline) { try await next.run(call) }
                    if fired, case .failure = result {
                        configuration.observer?(.timedOut(tool: call.tool, after: limit, shadow: false))
                        throw ToolOpsError(.timedOut, "\(call.tool) exceeded its timeout of \(limit)")
                    }
                    return try result.get()
                }
                guard let result = try await group.next() else { throw CancellationError() }
                return result
            }
        }
        // Any other clock (a test's manual clock): race the work against a sleep on that clock.
        return try await withThrowingTaskGroup(of: ToolResult?.self) { group in
            group.addTask { try await next.run(call) }
            group.addTask {
                try await clock.sleep(for: limit)
                return nil
            }
            defer { group.cancelAll() }
            // The first child to finish decides.
            guard let first = try await group.next() else { throw CancellationError() }
            if let result = first { return result }
            configuration.observer?(.timedOut(tool: call.tool, after: limit, shadow: false))
            throw ToolOpsError(.timedOut, "\(call.tool) exceeded its timeout of \(limit)")
        }
    }
}
