import ToolOpsCore

/// Retries failed calls with back-off.
///
/// Put it outside the breaker, bulkhead and timeout (see ``ToolPipeline``): each attempt
/// then passes the breaker, takes a bulkhead slot only while it runs, and has its own timeout.
public struct RetryMiddleware: ToolMiddleware {
    public struct Configuration: Sendable {
        public var policy: RetryPolicy
        /// Optional guard against retry storms. Defaults to none.
        public var budget: RetryBudget?
        public var mode: PolicyMode
        public var observer: ResilienceObserver?
        public init(policy: RetryPolicy, budget: RetryBudget? = nil, mode: PolicyMode = .enforce, observer: ResilienceObserver? = nil) {
            self.policy = policy
            self.budget = budget
            self.mode = mode
            self.observer = observer
        }
    }

    public let configuration: Configuration
    let clock: any ToolOpsClock

    public init(_ configuration: Configuration, clock: any ToolOpsClock = SystemClock()) {
        self.configuration = configuration
        self.clock = clock
    }

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        let policy = configuration.policy
        configuration.budget?.recordCall()
        var generator = SystemRandomNumberGenerator()
        var previousDelay = policy.initialDelay
        var attempt = 1
        while true {
            try Task.checkCancellation()
            do {
                return try await next.run(call)
            } catch {
                guard policy.retryIf(error) else { throw error }
                if attempt >= policy.maxAttempts {
                    if policy.maxAttempts == 1 { throw error }
                    throw ToolOpsError(.retriesExhausted, "\(call.tool) failed after \(attempt) attempts", attempts: attempt, underlying: error)
                }
                var delay = policy.delay(retry: attempt, previous: previousDelay, using: &generator)
                if let hint = (error as? ToolOpsError)?.retryAfter {
                    // A retry-after longer than we are willing to wait: give up now.
                    if hint > policy.maxDelay { throw error }
                    delay = max(delay, hint)
                }
                if configuration.mode.isShadow {
                    configuration.observer?(.retrying(tool: call.tool, attempt: attempt + 1, delay: delay, error: error, shadow: true))
                    throw error
                }
                if let budget = configuration.budget, !budget.tryRetry() {
                    configuration.observer?(.retryBudgetExhausted(tool: call.tool))
                    throw ToolOpsError(.retriesExhausted, "retry budget exhausted for \(call.tool)", attempts: attempt, underlying: error)
                }
                configuration.observer?(.retrying(tool: call.tool, attempt: attempt + 1, delay: delay, error: error, shadow: false))
                try await clock.sleep(for: delay)
                previousDelay = delay
                attempt += 1
            }
        }
    }
}
