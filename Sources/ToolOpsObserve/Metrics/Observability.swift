import Logging
import Metrics
import Synchronization
import ToolOpsCache
import ToolOpsCore
import ToolOpsResilience
import Tracing

/// Traces, counts and logs tool calls, and turns the policies' events into metrics and span
/// events. One value per pipeline (or per server): its ``middleware`` goes first in the chain,
/// and each policy gets its observer in one argument.
///
/// ```swift
/// let observe = Observability(.init(tools: .registered(registry.tools)))
/// let pipeline = try ToolPipeline(runner: tools) {
///     observe.middleware
///     try RateLimitMiddleware(.init(rules: rules, observer: observe.resilience))
///     try CacheMiddleware(.init(policy: policy, observer: observe.cache), store: store)
///     RetryMiddleware(.init(policy: retry, observer: observe.resilience))
///     try CircuitBreakerMiddleware(.init(policy: breaker, observer: observe.resilience))
/// }
/// ```
///
/// It never bootstraps anything: it uses the metrics factory, tracer and logger it is given,
/// or the ones bootstrapped when it is created (metrics, logger) or when a call starts (tracer).
///
/// Series (Prometheus names; no argument values, principals or call ids in labels):
/// - `toolops_tool_calls_total{tool,outcome}`, `toolops_tool_call_duration_seconds{tool}`;
/// - `toolops_cache_hits_total{tool}`, `toolops_cache_misses_total{tool}`,
///   `toolops_cache_stale_served_total{tool}`, `toolops_cache_errors_total{tool}`;
/// - `toolops_ratelimit_decisions_total{rule,result}` (`allowed`, `refused`, `shadow_refused`);
/// - `toolops_circuit_state{breaker}` (0 closed, 1 half-open, 2 open, as this replica last saw
///   it), `toolops_circuit_transitions_total{breaker,to}`, `toolops_circuit_rejections_total{breaker}`;
/// - `toolops_bulkhead_in_use{bulkhead}` (this replica's calls holding a slot),
///   `toolops_bulkhead_rejections_total{bulkhead}`;
/// - `toolops_retries_total{tool}`, `toolops_retry_budget_exhausted_total{tool}`, `toolops_timeouts_total{tool}`.
///
/// Tools become labels through ``Configuration/tools``; breakers and bulkheads (whose keys may
/// hold a tenant) through a ``BoundedLabels`` of ``Configuration/maximumPolicyLabels``.
public final class Observability: Sendable {
    public struct Configuration: Sendable {
        /// Which tools get labels of their own. Defaults to ``ToolLabels/firstSeen(maximum:)``
        /// (256); a server passes ``ToolLabels/registered(_:)``.
        public var tools: ToolLabels
        /// Distinct breakers and bulkheads labelled before the rest share `other`. Defaults to 256.
        public var maximumPolicyLabels: Int
        /// The tracer spans go to. `nil` (the default) means the one bootstrapped in
        /// `InstrumentationSystem` at the time of each call (a no-op tracer if none).
        public var tracer: (any Tracer)?
        /// Where completed-call lines go; `nil` logs none. Defaults to a logger labelled `toolops.calls`.
        public var logger: Logger?
        /// The level of completed-call lines. Defaults to `.info`; failed calls log at `.warning`
        /// when that is higher.
        public var completedCallLevel: Logger.Level
        /// Whether completed-call lines carry the call's arguments (redacted). Defaults to `false`.
        public var logArguments: Bool
        /// The keys hidden in logged arguments. Defaults to ``Redaction/defaultKeys``.
        public var redaction: Redaction
        /// Running totals per tool and outcome (for a dashboard); `nil` (the default) keeps none.
        public var statistics: ToolStatistics?

        public init(
            tools: ToolLabels = .firstSeen(), maximumPolicyLabels: Int = 256, tracer: (any Tracer)? = nil,
            logger: Logger? = Logger(label: "toolops.calls"), completedCallLevel: Logger.Level = .info, logArguments: Bool = false,
            redaction: Redaction = Redaction(), statistics: ToolStatistics? = nil
        ) {
            self.statistics = statistics
            self.tools = tools
            self.maximumPolicyLabels = maximumPolicyLabels
            self.tracer = tracer
            self.logger = logger
            self.completedCallLevel = completedCallLevel
            self.logArguments = logArguments
            self.redaction = redaction
        }
    }

    public let configuration: Configuration
    let factory: any MetricsFactory
    let breakers: BoundedLabels
    let bulkheads: BoundedLabels
    private let tools = Mutex<[ToolID: ToolSeries]>([:])
    private let shared: ToolSeries
    private let counters = Mutex<[SeriesKey: Counter]>([:])
    private let gauges = Mutex<[SeriesKey: Gauge]>([:])
    private let meters = Mutex<[SeriesKey: Meter]>([:])
    /// The per-call series, found by the event's own strings (no key built, one lock):
    /// rate-limit decisions by rule name, bulkhead meters by store key (bounded, see
    /// ``perCallSeriesLimit``).
    private let perCall = Mutex(PerCallSeries())

    /// Store keys (and rule–result pairs) remembered with their series; past this many, an
    /// event takes the slower way (label, then series) and memory stays bounded when keys come
    /// from tenants.
    package static let perCallSeriesLimit = 4096

    /// How many store keys and rule–result pairs are remembered (for tests of the bound).
    package var perCallSeriesCount: Int { perCall.withLock { $0.decisions.count + $0.bulkheadInUse.count } }

    struct PerCallSeries {
        var decisions: [Decision: Counter] = [:]
        var bulkheadInUse: [String: Meter] = [:]
    }

    /// A `toolops_ratelimit_decisions_total` series: a rule and a result.
    struct Decision: Hashable {
        let rule: String
        let result: String
    }

    /// A series by name and label pairs, hashed as they are (no string built per event).
    struct SeriesKey: Hashable {
        let name: String
        let dimensions: [String]

        init(_ name: String, _ dimensions: [(String, String)]) {
            self.name = name
            var flat: [String] = []
            flat.reserveCapacity(dimensions.count * 2)
            for (label, value) in dimensions {
                flat.append(label)
                flat.append(value)
            }
            self.dimensions = flat
        }
    }

    /// - Parameter metricsFactory: where series are made. Defaults to `MetricsSystem.factory`
    ///   as bootstrapped when this is created.
    public init(_ configuration: Configuration = .init(), metricsFactory: (any MetricsFactory)? = nil) {
        self.configuration = configuration
        let factory = metricsFactory ?? MetricsSystem.factory
        self.factory = factory
        self.breakers = BoundedLabels(maximum: configuration.maximumPolicyLabels)
        self.bulkheads = BoundedLabels(maximum: configuration.maximumPolicyLabels)
        self.shared = ToolSeries(label: ToolLabels.unregistered, factory: factory, statistics: configuration.statistics)
        // Registered tools' series are made now and read without a lock on every call.
        if case .registered(let tools) = configuration.tools.rule {
            self.registered = Dictionary(uniqueKeysWithValues: tools.map { ($0, ToolSeries(label: $0.description, factory: factory, statistics: configuration.statistics)) })
        } else {
            self.registered = [:]
        }
    }

    /// The series of registered tools (``ToolLabels/registered(_:)``), made at start.
    private let registered: [ToolID: ToolSeries]

    /// The middleware that traces, counts and logs each call. Put it first.
    public var middleware: ObserveMiddleware { ObserveMiddleware(self) }

    /// The observer for every resilience middleware's `observer`.
    public var resilience: ResilienceObserver { { [self] event in observe(event) } }

    /// The observer for ``CacheMiddleware``'s `observer`.
    public var cache: @Sendable (CacheEvent) -> Void { { [self] event in observe(event) } }

    // MARK: series

    /// The series of one tool (created once per label).
    final class ToolSeries: Sendable {
        let label: String
        /// `tool.exec <label>`, made once.
        let spanName: String
        /// What the task-local carries when there is no span (shared by every such call).
        let observation: ToolObservation
        /// One counter per outcome, in ``ToolOutcome/allCases`` order.
        let calls: [Counter]
        let duration: Timer

        /// This tool's running totals, when the observability keeps ``ToolStatistics``.
        let statistics: ToolStatistics.Counts?

        init(label: String, factory: any MetricsFactory, statistics: ToolStatistics?) {
            self.label = label
            self.statistics = statistics?.counts(for: label)
            self.spanName = "tool.exec \(label)"
            self.observation = ToolObservation(span: nil, metricLabel: label)
            self.calls = ToolOutcome.allCases.map {
                Counter(label: "toolops_tool_calls_total", dimensions: [("tool", label), ("outcome", $0.rawValue)], factory: factory)
            }
            self.duration = Timer(label: "toolops_tool_call_duration_seconds", dimensions: [("tool", label)], factory: factory)
        }

        func calls(_ outcome: ToolOutcome) -> Counter? {
            let index = outcome.ordinal
            return index < calls.count ? calls[index] : nil
        }
    }

    func series(for tool: ToolID) -> ToolSeries {
        if let known = registered[tool] { return known }
        if let known = tools.withLock({ $0[tool] }) { return known }
        let label = configuration.tools.label(for: tool)
        guard label != ToolLabels.unregistered else { return shared }
        // Made outside the lock (the factory takes its own); a race makes one twice, harmlessly.
        let made = ToolSeries(label: label, factory: factory, statistics: configuration.statistics)
        return tools.withLock { tools in
            if let known = tools[tool] { return known }
            tools[tool] = made
            return made
        }
    }

    func toolLabel(_ tool: ToolID) -> String { series(for: tool).label }

    func counter(_ name: String, _ dimensions: [(String, String)]) -> Counter {
        let key = SeriesKey(name, dimensions)
        if let known = counters.withLock({ $0[key] }) { return known }
        let made = Counter(label: name, dimensions: dimensions, factory: factory)
        return counters.withLock { known in
            if let raced = known[key] { return raced }
            known[key] = made
            return made
        }
    }

    func gauge(_ name: String, _ dimensions: [(String, String)]) -> Gauge {
        let key = SeriesKey(name, dimensions)
        if let known = gauges.withLock({ $0[key] }) { return known }
        let made = Gauge(label: name, dimensions: dimensions, factory: factory)
        return gauges.withLock { known in
            if let raced = known[key] { return raced }
            known[key] = made
            return made
        }
    }

    func meter(_ name: String, _ dimensions: [(String, String)]) -> Meter {
        let key = SeriesKey(name, dimensions)
        if let known = meters.withLock({ $0[key] }) { return known }
        let made = Meter(label: name, dimensions: dimensions, factory: factory)
        return meters.withLock { known in
            if let raced = known[key] { return raced }
            known[key] = made
            return made
        }
    }

    /// The `toolops_ratelimit_decisions_total` counter of `rule` and `result` (made on first use).
    func decisions(rule: String, result: String) -> Counter {
        let key = Decision(rule: rule, result: result)
        if let known = perCall.withLock({ $0.decisions[key] }) { return known }
        let made = counter("toolops_ratelimit_decisions_total", [("rule", rule), ("result", result)])
        perCall.withLock { series in
            // Rule names come from the configuration, but a custom middleware could name rules
            // per call: bounded like the store keys.
            if series.decisions.count < Self.perCallSeriesLimit { series.decisions[key] = made }
        }
        return made
    }

    /// `toolops_bulkhead_in_use` of the bulkhead whose store key is `key`.
    func bulkheadInUse(key: String) -> Meter {
        if let known = perCall.withLock({ $0.bulkheadInUse[key] }) { return known }
        let made = meter("toolops_bulkhead_in_use", [("bulkhead", bulkheads.label(for: key))])
        perCall.withLock { series in
            if series.bulkheadInUse.count < Self.perCallSeriesLimit { series.bulkheadInUse[key] = made }
        }
        return made
    }

    // MARK: events

    /// The label of the tool the current task's call is for (set by the middleware).
    private var currentToolLabel: String {
        ToolObservation.current?.metricLabel ?? ToolLabels.unregistered
    }

    /// Records a cache event (what ``cache`` does), for an observer of your own that does more.
    public func observe(_ event: CacheEvent) {
        switch event {
        case .hit:
            counter("toolops_cache_hits_total", [("tool", currentToolLabel)]).increment()
            ToolSpan.addEvent("cache.hit")
        case .miss:
            counter("toolops_cache_misses_total", [("tool", currentToolLabel)]).increment()
            ToolSpan.addEvent("cache.miss")
        case .servedStale:
            counter("toolops_cache_stale_served_total", [("tool", currentToolLabel)]).increment()
            ToolSpan.addEvent("cache.stale")
        case .coalesced:
            ToolSpan.addEvent("cache.coalesced")
        case .tooLarge(_, let bytes):
            ToolSpan.addEvent("cache.too_large", ["toolops.cache.bytes": .int64(Int64(bytes))])
        case .storeFailed(let operation, _):
            counter("toolops_cache_errors_total", [("tool", currentToolLabel)]).increment()
            ToolSpan.addEvent("cache.error", ["toolops.cache.operation": .string(operation)])
        case .refreshStarted:
            ToolSpan.addEvent("cache.refresh")
        }
    }

    /// Records a resilience event (what ``resilience`` does), for an observer of your own that
    /// does more: calling this from it costs no closure per event.
    public func observe(_ event: ResilienceEvent) {
        switch event {
        case .rateLimitDecided(_, let rule, let allowed, let shadow):
            let result = allowed ? "allowed" : shadow ? "shadow_refused" : "refused"
            decisions(rule: rule, result: result).increment()
            ToolSpan.addEvent("ratelimit.decision", ["toolops.ratelimit.rule": .string(rule), "toolops.ratelimit.result": .string(result)])
        case .rateLimited(_, _, let decision, _):
            ToolSpan.addEvent("ratelimit.refused", ["toolops.retry_after_ms": .int64(decision.retryAfter.milliseconds)])
        case .rateLimitWaited(_, _, let wait):
            ToolSpan.addEvent("ratelimit.waited", ["toolops.wait_ms": .int64(wait.milliseconds)])
        case .circuitStateChanged(let key, _, let to):
            let breaker = breakers.label(for: key)
            gauge("toolops_circuit_state", [("breaker", breaker)]).record(to.metricValue)
            counter("toolops_circuit_transitions_total", [("breaker", breaker), ("to", to.rawValue)]).increment()
            ToolSpan.addEvent("circuit.transition", ["toolops.circuit.to": .string(to.rawValue)])
        case .circuitRejected(_, let key, let retryAfter, let shadow):
            counter("toolops_circuit_rejections_total", [("breaker", breakers.label(for: key))]).increment()
            ToolSpan.addEvent(
                "circuit.rejected", ["toolops.retry_after_ms": .int64(retryAfter.milliseconds), "toolops.shadow": .bool(shadow)])
        case .bulkheadRejected(_, let key, let shadow):
            counter("toolops_bulkhead_rejections_total", [("bulkhead", bulkheads.label(for: key))]).increment()
            ToolSpan.addEvent("bulkhead.rejected", ["toolops.shadow": .bool(shadow)])
        case .bulkheadAcquired(_, let key):
            bulkheadInUse(key: key).increment()
        case .bulkheadReleased(_, let key):
            bulkheadInUse(key: key).decrement()
        case .retrying(let tool, let attempt, let delay, _, let shadow):
            counter("toolops_retries_total", [("tool", toolLabel(tool))]).increment()
            ToolSpan.addEvent(
                "retry", ["toolops.retry.attempt": .int64(Int64(attempt)), "toolops.retry.delay_ms": .int64(delay.milliseconds),
                          "toolops.shadow": .bool(shadow)])
        case .retryBudgetExhausted(let tool):
            counter("toolops_retry_budget_exhausted_total", [("tool", toolLabel(tool))]).increment()
            ToolSpan.addEvent("retry.budget_exhausted")
        case .timedOut(let tool, let after, let shadow):
            counter("toolops_timeouts_total", [("tool", toolLabel(tool))]).increment()
            ToolSpan.addEvent("timeout", ["toolops.timeout_ms": .int64(after.milliseconds), "toolops.shadow": .bool(shadow)])
        case .storeDegraded(let store, _):
            ToolSpan.addEvent("store.degraded", ["toolops.store": .string(store)])
        case .storeRecovered(let store):
            ToolSpan.addEvent("store.recovered", ["toolops.store": .string(store)])
        }
    }
}

extension ToolOutcome {
    /// The position in `allCases`, without building the array (the hot path asks per call).
    var ordinal: Int {
        switch self {
        case .ok: 0
        case .error: 1
        case .rateLimited: 2
        case .circuitOpen: 3
        case .bulkheadFull: 4
        case .timedOut: 5
        case .cached: 6
        case .cancelled: 7
        case .unauthenticated: 8
        case .forbidden: 9
        }
    }
}

extension CircuitState {
    /// 0 closed, 1 half-open, 2 open (forced open and disabled read as open and closed).
    var metricValue: Double {
        switch self {
        case .closed, .disabled: 0
        case .halfOpen: 1
        case .open, .forcedOpen: 2
        }
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1000 &+ attoseconds / 1_000_000_000_000_000
    }
}
