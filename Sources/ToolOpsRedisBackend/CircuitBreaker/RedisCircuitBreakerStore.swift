import Logging
import ServiceLifecycle
import Synchronization
import ToolOpsCore
import ToolOpsRedis
import ToolOpsResilience

/// Circuit breakers shared by every replica.
///
/// - State and time-bucketed counts live in one hash per breaker; thresholds, minimum calls,
///   open duration (Redis time) and the half-open probe budget are evaluated atomically in Lua.
///   At most `permittedHalfOpenCalls` probes are in flight **across all replicas**.
/// - Transitions are published on a channel; each replica keeps a local view, so admitting a
///   call while the breaker is closed — or refusing one while it is open — costs no round trip.
/// - Outcomes are aggregated locally and sent in batches every `flushInterval`, off the
///   caller's path.
/// - Quorum mode: a breaker opens only when at least `quorum` replicas reported failures
///   within the window, so one sick replica cannot trip everyone.
/// - Requires a time window (`CircuitBreakerPolicy.Window.time`): call counts are summed
///   over replicas, and "the last N calls" has no cluster-wide order.
///
/// It is a ServiceLifecycle `Service` (run by the ``RedisBackend`` that made it): ``run()``
/// follows the channel, so the local views are trusted, and flushes the queued outcomes every
/// `flushInterval`. Until it runs, and whenever the subscription is lost, every admission
/// asks Redis, and outcomes are sent as they are recorded (one round trip each).
public final class RedisCircuitBreakerStore: CircuitBreakerStore, Service {
    public struct Configuration: Sendable {
        /// How often pending outcomes are sent. Defaults to 20 ms.
        public var flushInterval: Duration
        /// Replicas that must report failures before a breaker opens. Defaults to 1.
        public var quorum: Int
        /// This replica's id, for quorum counting. Defaults to a random id.
        public var replicaID: String
        /// Breakers whose state this replica keeps a local view of (breakers keyed per tenant
        /// can number millions). Beyond it an arbitrary view is forgotten: that breaker's next
        /// admission asks Redis, as before its first transition. Defaults to 10,000.
        public var maximumViews: Int
        public init(
            flushInterval: Duration = .milliseconds(20), quorum: Int = 1, replicaID: String = ToolCall.makeID(),
            maximumViews: Int = 10_000
        ) {
            self.flushInterval = flushInterval
            self.quorum = quorum
            self.replicaID = replicaID
            self.maximumViews = max(1, maximumViews)
        }
    }

    struct View {
        var state: CircuitState
        /// Local monotonic instant until which an open breaker refuses without asking.
        var openUntil: ClockInstant
        /// The transition's version (Redis time µs, strictly increasing per breaker; `nil` from
        /// replicas that predate versions): an older answer never overwrites a newer view.
        var version: Int64?
    }

    struct Pending {
        var calls = 0
        var failures = 0
        var slow = 0
        var probeSuccesses = 0
        var probeFailures = 0
        var probeIgnored = 0
        /// The half-open round the probe counts belong to (0: unknown).
        var probeRound: Int64 = 0
        var policy: CircuitBreakerPolicy
        var isEmpty: Bool { calls == 0 && probeSuccesses == 0 && probeFailures == 0 && probeIgnored == 0 }
    }

    struct State {
        var views: [String: View] = [:]
        var pending: [String: Pending] = [:]
        var flushScheduled = false
        /// The views follow the channel (subscribed and not in a gap).
        var subscribed = false
        /// Times the channel was lost, so `start()` can tell a loss that raced its subscribe.
        var losses = 0
        var started = false
        /// ``run()`` is flushing in the background; otherwise `record` sends at once.
        var flusherRunning = false
    }

    public let client: RedisClient
    public let keys: RedisKeySchema
    public let configuration: Configuration
    let clock: any ToolOpsClock
    let observer: ResilienceObserver?
    let logger: Logger
    private let state = Mutex(State())
    /// Wakes the flusher: an outcome is waiting (one pending wake-up is enough).
    private let flushRequests = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    public init(
        client: RedisClient, keys: RedisKeySchema = .init(), configuration: Configuration = .init(),
        clock: any ToolOpsClock = SystemClock(), observer: ResilienceObserver? = nil,
        logger: Logger = Logger(label: "toolops.circuit-breaker")
    ) {
        self.client = client
        self.keys = keys
        self.configuration = configuration
        self.clock = clock
        self.observer = observer
        self.logger = logger
    }

    // MARK: scripts

    /// Shared prologue: time, policy, bucket pruning and counting.
    static let prologue = """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        local windowMs, failRate, slowRate = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
        local minCalls, openMs, permitted, quorum = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
        local bucketMs = math.max(1, math.floor(windowMs / 20))
        local h = redis.call('HGETALL', KEYS[1])
        local f = {}
        for i = 1, #h, 2 do f[h[i]] = h[i + 1] end
        local st = f['state'] or 'closed'
        local openedAt = tonumber(f['openedAt'] or '0')
        local inflight = tonumber(f['inflight'] or '0')
        local successes = tonumber(f['successes'] or '0')
        local ver = tonumber(f['ver'] or '0')
        local function publish(to)
          local left = 0
          if to == 'open' then left = openedAt + openMs - now end
          redis.call('PUBLISH', ARGV[1], ARGV[9] .. '|' .. to .. '|' .. left .. '|' .. string.format('%.0f', ver))
        end
        local function forgetProbes()
          for k, _ in pairs(f) do
            if string.sub(k, 1, 2) == 'g:' then redis.call('HDEL', KEYS[1], k) end
          end
        end
        local function move(to)
          if to == st then return end
          st = to
          inflight, successes = 0, 0
          forgetProbes()
          -- Versions come from Redis time, so they keep increasing even after the hash expired.
          ver = math.max(now * 1000, ver + 1)
          redis.call('HSET', KEYS[1], 'state', st, 'inflight', 0, 'successes', 0, 'openedAt', openedAt, 'ver', string.format('%.0f', ver))
          publish(to)
        end
        local function clearWindow()
          for k, _ in pairs(f) do
            if string.sub(k, 1, 2) == 'b:' or string.sub(k, 1, 2) == 'r:' then redis.call('HDEL', KEYS[1], k) end
          end
        end
        -- The version a reply reports: the last transition's, or — for a breaker without one
        -- (new, or expired while idle) — "as of now", just below any transition made now.
        local function version()
          if ver > 0 then return ver end
          return now * 1000 - 1
        end
        local function retryAfter()
          if st == 'open' then return math.max(0, openedAt + openMs - now) end
          if st == 'forced_open' then return openMs end
          return 0
        end
        """

    /// KEYS: the hash. ARGV 1: the transition channel (an argument, not a key: on a
    /// cluster it lives in no slot); 2–8: policy; 9: breaker name; 10: replica; 11–16: calls,
    /// failures, slow, probe successes, probe failures, probe ignored; 17: the probes' round
    /// (0: unknown). Returns state, retry-after ms, version.
    public static let recordScript = RedisScript(prologue + "\n" + """
        local calls, failures, slow = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
        local pOk, pFail, pIgnored = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
        local round = tonumber(ARGV[17] or '0')
        if round > 0 and round ~= tonumber(f['halfOpenAt'] or '0') then
          -- Probes of a round that lapsed: their slots went to the current round already.
          pOk, pFail, pIgnored = 0, 0, 0
        end
        if st == 'half_open' and pOk + pFail + pIgnored > 0 then
          inflight = math.max(0, inflight - pOk - pFail - pIgnored)
          if pFail > 0 then
            openedAt = now
            move('open')
          else
            successes = successes + pOk
            if successes >= permitted then
              clearWindow()
              move('closed')
            else
              redis.call('HSET', KEYS[1], 'inflight', inflight, 'successes', successes)
            end
          end
        elseif st == 'closed' and calls > 0 then
          local bucket = 'b:' .. (now - now % bucketMs)
          local cur = f[bucket]
          local c, fl, sl = 0, 0, 0
          if cur then
            local a, b, d = string.match(cur, '(%d+),(%d+),(%d+)')
            c, fl, sl = tonumber(a), tonumber(b), tonumber(d)
          end
          c, fl, sl = c + calls, fl + failures, sl + slow
          f[bucket] = c .. ',' .. fl .. ',' .. sl
          redis.call('HSET', KEYS[1], bucket, f[bucket])
          if failures > 0 or slow > 0 then
            f['r:' .. ARGV[10]] = tostring(now)
            redis.call('HSET', KEYS[1], 'r:' .. ARGV[10], now)
          end
          local tc, tf, ts, replicas = 0, 0, 0, 0
          for k, v in pairs(f) do
            if string.sub(k, 1, 2) == 'b:' then
              if tonumber(string.sub(k, 3)) + bucketMs <= now - windowMs then
                redis.call('HDEL', KEYS[1], k)
              else
                local a, b, d = string.match(v, '(%d+),(%d+),(%d+)')
                tc, tf, ts = tc + tonumber(a), tf + tonumber(b), ts + tonumber(d)
              end
            elseif string.sub(k, 1, 2) == 'r:' then
              if tonumber(v) > now - windowMs then replicas = replicas + 1 else redis.call('HDEL', KEYS[1], k) end
            end
          end
          if tc >= minCalls and (tf / tc >= failRate or ts / tc >= slowRate) and replicas >= quorum then
            openedAt = now
            clearWindow()
            move('open')
          end
        end
        -- Operator states persist until an operator changes them; the others expire when idle.
        if st ~= 'forced_open' and st ~= 'disabled' then redis.call('PEXPIRE', KEYS[1], windowMs + openMs + 60000) end
        return {st, retryAfter(), version()}
        """)

    /// Admission when the local view is not "closed". KEYS: the hash. ARGV 1–9 as above;
    /// 10: an id for the probe, should one be granted (a field `g:<id>` = its round, so a probe
    /// whose answer was lost can be given back). Returns state, allowed (1/0), probe (1/0),
    /// retry-after ms, version, probe round.
    public static let admitScript = RedisScript(prologue + "\n" + """
        if st == 'open' and now >= openedAt + openMs then
          move('half_open')
          redis.call('HSET', KEYS[1], 'halfOpenAt', now)
          f['halfOpenAt'] = tostring(now)
        end
        if st == 'half_open' and inflight > 0 and now >= tonumber(f['halfOpenAt'] or '0') + openMs then
          -- Probes are leased for one open duration: overdue ones (lost outcomes) lapse.
          inflight, successes = 0, 0
          forgetProbes()
          redis.call('HSET', KEYS[1], 'inflight', 0, 'successes', 0, 'halfOpenAt', now)
          f['halfOpenAt'] = tostring(now)
        end
        if st == 'half_open' then
          if inflight + successes < permitted then
            inflight = inflight + 1
            redis.call('HSET', KEYS[1], 'inflight', inflight)
            if ARGV[10] then redis.call('HSET', KEYS[1], 'g:' .. ARGV[10], f['halfOpenAt'] or '0') end
            return {st, 1, 1, 0, version(), tonumber(f['halfOpenAt'] or '0')}
          end
          return {st, 0, 0, math.min(openMs, 1000), version()}
        end
        if st == 'closed' or st == 'disabled' then return {st, 1, 0, 0, version()} end
        return {st, 0, 0, retryAfter(), version()}
        """)

    /// Gives back a probe slot whose admission answer was lost (the caller was cancelled or
    /// the command timed out after the script ran), if it was granted and its round is still
    /// current. KEYS: hash. ARGV: the probe id. Returns 1 when a slot was given back.
    public static let releaseProbeScript = RedisScript(
        """
        local field = 'g:' .. ARGV[1]
        local round = redis.call('HGET', KEYS[1], field)
        if not round then return 0 end
        redis.call('HDEL', KEYS[1], field)
        if redis.call('HGET', KEYS[1], 'state') ~= 'half_open' or redis.call('HGET', KEYS[1], 'halfOpenAt') ~= round then return 0 end
        local inflight = tonumber(redis.call('HGET', KEYS[1], 'inflight') or '0')
        if inflight < 1 then return 0 end
        redis.call('HSET', KEYS[1], 'inflight', inflight - 1)
        return 1
        """)

    /// Operator control. KEYS: the hash. ARGV 1–9 as above; 10: forced_open | disabled | closed. Returns the
    /// state before, the state after, version.
    public static let controlScript = RedisScript(prologue + "\n" + """
        local target = ARGV[10]
        if target == 'closed' then clearWindow() end
        openedAt = now
        local before = st
        move(target)
        if st == 'forced_open' or st == 'disabled' then
          redis.call('PERSIST', KEYS[1])
        else
          redis.call('PEXPIRE', KEYS[1], windowMs + openMs + 60000)
        end
        return {before, st, version()}
        """)

    func arguments(_ policy: CircuitBreakerPolicy, name: String) throws(ToolOpsError) -> [any RedisArgumentConvertible] {
        guard let window = policy.window.duration else {
            throw ToolOpsError(.invalidConfiguration, "the Redis circuit-breaker store needs a time window (.time(…)), not \(policy.window)")
        }
        return [
            keys.circuitBreakerEvents,
            max(1, window.nanosecondsClamped / 1_000_000), policy.failureRateThreshold, policy.slowCallRateThreshold,
            policy.minimumCalls, max(1, policy.openDuration.nanosecondsClamped / 1_000_000), policy.permittedHalfOpenCalls,
            configuration.quorum, name,
        ]
    }

    private func run(_ script: RedisScript, name: String, policy: CircuitBreakerPolicy, extra: [any RedisArgumentConvertible]) async throws -> [RESPValue] {
        do {
            let reply = try await client.run(
                script, keys: [keys.circuitBreaker(name)], arguments: try arguments(policy, name: name) + extra)
            guard let values = reply.array else { throw RedisClientError(.unexpectedReply, "breaker script returned \(reply)") }
            return values
        } catch let error as RedisClientError where error.isUnavailable {
            throw ToolOpsError(.storeUnavailable, "Redis unavailable for circuit breaker \(name)", underlying: error)
        }
    }

    // MARK: local view

    /// Updates the local view — unless it already holds a newer transition: a reply that
    /// was overtaken by a published transition (an admit answered "open" while an operator's
    /// reset was being announced) must not bring the old state back.
    func apply(name: String, state newState: CircuitState, retryAfterMs: Int64, version: Int64?) {
        let now = clock.now
        let transition: CircuitTransition? = state.withLock { state in
            let current = state.views[name]
            // Equal versions are the same transition (its reply and its announcement).
            if let known = current?.version, let version, version <= known { return nil }
            let old = current?.state ?? .closed
            if current == nil && state.views.count >= configuration.maximumViews {
                state.views.remove(at: state.views.startIndex)
            }
            state.views[name] = View(state: newState, openUntil: now + .milliseconds(retryAfterMs), version: version ?? current?.version)
            return old == newState ? nil : CircuitTransition(from: old, to: newState)
        }
        if let transition { observer?(.circuitStateChanged(key: name, from: transition.from, to: transition.to)) }
    }

    /// Follows the transition channel and flushes queued outcomes until graceful shutdown (or
    /// cancellation); then sends what is still queued and unsubscribes. While Redis is
    /// unreachable it keeps trying to subscribe, with the client's reconnect backoff; it never
    /// throws. Run it once (``RedisBackend`` does).
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await followChannel(client: self.client, subscribe: { try await self.start() }, unsubscribe: { self.stop() }) }
            group.addTask { await self.runFlusher() }
        }
    }

    /// Flushes every `flushInterval` while outcomes are queued; at graceful shutdown, once more.
    private func runFlusher() async {
        state.withLock { $0.flusherRunning = true }
        let (requests, continuation) = flushRequests
        await withGracefulShutdownHandler {
            for await _ in requests {
                try? await clock.sleep(for: configuration.flushInterval)
                await flush()
            }
        } onGracefulShutdown: {
            continuation.finish()
        }
        // From here `record` sends by itself; what was queued before goes now.
        state.withLock { $0.flusherRunning = false }
        await flush()
    }

    /// Subscribes to the transition channel (idempotent). Until it is running, and while it
    /// is lost, admissions ask Redis.
    package func start() async throws {
        let alreadyStarted = state.withLock { state -> Bool in
            defer { state.started = true }
            return state.started
        }
        if alreadyStarted { return }
        // Handled on the pub/sub I/O thread: a transition reaches the view without waiting
        // for a task to be scheduled.
        let lossesBefore = state.withLock { $0.losses }
        let handle: RedisSubscriptionHandle
        do {
            handle = try await subscribe()
        } catch {
            state.withLock { $0.started = false }
            throw error
        }
        // A loss reported between the confirmation and here has the last word.
        state.withLock { if $0.losses == lossesBefore { $0.subscribed = true } }
        subscription.withLock { $0 = handle }
    }

    private func subscribe() async throws -> RedisSubscriptionHandle {
        try await client.subscribe(to: [keys.circuitBreakerEvents]) { [weak self] event in
            guard let self else { return }
            switch event {
            case .message(let message):
                guard let transition = Self.parseTransition(message.text) else { return }
                self.apply(name: transition.name, state: transition.state, retryAfterMs: transition.retryAfterMs, version: transition.version)
            case .connectionLost:
                // Transitions may be missed until the channel is back: stop trusting the views
                // (admissions ask Redis meanwhile).
                self.state.withLock {
                    $0.subscribed = false
                    $0.losses += 1
                    $0.views.removeAll()
                }
            case .restored:
                // Views learnt during the gap may have missed transitions: start afresh.
                self.state.withLock {
                    $0.views.removeAll()
                    $0.subscribed = $0.started
                }
            }
        }
    }

    /// `<name>|<state>|<ms>|<version>`, parsed from the end (names may contain `|`); also the
    /// version-less `<name>|<state>|<ms>` of earlier releases, during a rolling upgrade.
    static func parseTransition(_ text: String) -> (name: String, state: CircuitState, retryAfterMs: Int64, version: Int64?)? {
        var fields: [Substring] = []
        var end = text.endIndex
        for _ in 0..<3 {
            guard let bar = text[..<end].lastIndex(of: "|") else { break }
            fields.insert(text[text.index(after: bar)..<end], at: 0)
            end = bar
        }
        // Four fields: name | state | ms | version.
        if fields.count == 3, let to = CircuitState(rawValue: String(fields[0])), let left = Int64(fields[1]), let version = Int64(fields[2]) {
            return (String(text[..<end]), to, left, version)
        }
        // Three fields: the name ends before the last two.
        guard fields.count >= 2, let left = Int64(fields[fields.count - 1]),
            let to = CircuitState(rawValue: String(fields[fields.count - 2]))
        else { return nil }
        let nameEnd = fields.count == 3 ? text.index(end, offsetBy: fields[0].count + 1) : end
        return (String(text[..<nameEnd]), to, left, nil)
    }

    /// Whether the local views follow the transition channel (admissions of closed breakers
    /// then cost no round trip).
    public var isFollowingTransitions: Bool { state.withLock { $0.subscribed } }

    /// The local view's state of a breaker (tests).
    func viewState(_ key: String) -> CircuitState? { state.withLock { $0.views[key]?.state } }

    /// Local views held (tests).
    var viewCount: Int { state.withLock { $0.views.count } }

    /// Stops following the channel.
    package func stop() {
        subscription.withLock { $0 }?.cancel()
        state.withLock {
            $0.subscribed = false
            $0.started = false
            $0.views.removeAll()
        }
    }

    private let subscription = Mutex<RedisSubscriptionHandle?>(nil)

    // MARK: CircuitBreakerStore

    /// Outcomes are queued and flushed in batches: recording never waits on Redis.
    public var recordsWithoutWaiting: Bool { true }

    public func admitLocally(key: String, policy: CircuitBreakerPolicy) -> CircuitAdmission? {
        let closed = state.withLock { state -> Bool in
            guard state.subscribed, let view = state.views[key] else { return false }
            return view.state == .closed || view.state == .disabled
        }
        return closed ? CircuitAdmission(allowed: true, probe: false, retryAfter: .zero, transition: nil) : nil
    }

    public func admit(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitAdmission {
        let now = clock.now
        // A breaker this replica has not seen yet (or since the channel was lost) is asked
        // about once; after that the channel keeps the view current.
        let local = state.withLock { state -> View? in state.subscribed ? state.views[key] : nil }
        if let local {
            switch local.state {
            case .closed, .disabled:
                return CircuitAdmission(allowed: true, probe: false, retryAfter: .zero, transition: nil)
            case .open where now < local.openUntil, .forcedOpen:
                let left = local.state == .forcedOpen ? policy.openDuration : local.openUntil - now
                return CircuitAdmission(allowed: false, probe: false, retryAfter: left, transition: nil)
            default:
                break  // open long enough, or half-open: the probe budget is cluster-wide
            }
        }
        // The probe id is ours, so a probe granted after we stopped waiting (the fallback's
        // deadline cancelled us, the command timed out) can be given back at once rather than
        // held until its round lapses.
        let probeID = String(UInt64.random(in: 1...UInt64.max))
        let values: [RESPValue]
        do {
            values = try await run(Self.admitScript, name: key, policy: policy, extra: [probeID])
        } catch {
            // Not when Redis answered (an error reply) or nothing was sent (a policy it refuses).
            let answered = (error as? RedisClientError)?.code == .serverError || (error as? ToolOpsError)?.code == .invalidConfiguration
            if !answered { giveBackProbe(key: key, probeID: probeID) }
            throw error
        }
        guard values.count >= 5, let stateName = values[0].string, let newState = CircuitState(rawValue: stateName),
            let allowed = values[1].int, let probe = values[2].int, let retry = values[3].int
        else { throw RedisClientError(.unexpectedReply, "breaker admit returned \(values)") }
        apply(name: key, state: newState, retryAfterMs: retry, version: values[4].int)
        return CircuitAdmission(
            allowed: allowed == 1, probe: probe == 1, retryAfter: .milliseconds(retry), transition: nil,
            probeRound: values.count > 5 ? values[5].int ?? 0 : 0)
    }

    private func giveBackProbe(key: String, probeID: String) {
        // Sent without waiting: the caller was cancelled (or timed out) and is already failing.
        // `EVAL`, not `EVALSHA`: nobody is there to retry a `NOSCRIPT`.
        client.sendUnawaited([RedisCommand("EVAL", Self.releaseProbeScript.source, 1, keys.circuitBreaker(key), probeID)])
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        try await record(key: key, outcome: outcome, probe: probe, round: 0, policy: policy)
    }

    public func record(key: String, outcome: CallOutcome, probe: Bool, round: Int64, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        let (scheduleFlush, flusherRunning) = state.withLock { state -> (Bool, Bool) in
            var pending = state.pending[key] ?? Pending(policy: policy)
            if probe && round != 0 && round != pending.probeRound {
                // Probe results of an older round are stale (the script would drop them too);
                // a newer round replaces the pending counts of an older one.
                if round < pending.probeRound { return (false, state.flusherRunning) }
                if pending.probeRound != 0 { (pending.probeSuccesses, pending.probeFailures, pending.probeIgnored) = (0, 0, 0) }
                pending.probeRound = round
            }
            switch (outcome, probe) {
            case (.ignored, true): pending.probeIgnored += 1
            case (.ignored, false): return (false, state.flusherRunning)
            case (.success(let duration), true):
                if duration >= policy.slowCallDuration { pending.probeFailures += 1 } else { pending.probeSuccesses += 1 }
            case (.failure, true): pending.probeFailures += 1
            case (.success(let duration), false):
                pending.calls += 1
                if duration >= policy.slowCallDuration { pending.slow += 1 }
            case (.failure(let duration), false):
                pending.calls += 1
                pending.failures += 1
                if duration >= policy.slowCallDuration { pending.slow += 1 }
            }
            state.pending[key] = pending
            if state.flushScheduled { return (false, state.flusherRunning) }
            state.flushScheduled = true
            return (true, state.flusherRunning)
        }
        if scheduleFlush {
            // Off the caller's path when the flusher runs: it sends everything pending after
            // one interval. Without it (the store is not run as a service), send now.
            if flusherRunning { flushRequests.continuation.yield() } else { await flush() }
        }
        return nil
    }

    /// Sends every pending outcome now (one pipelined write for all breakers).
    public func flush() async {
        let batch = state.withLock { state -> [String: Pending] in
            defer {
                state.pending.removeAll()
                state.flushScheduled = false
            }
            return state.pending
        }
        let entries = batch.filter { !$0.value.isEmpty }
        if entries.isEmpty { return }
        var commands: [RedisCommand] = []
        var names: [String] = []
        for (name, pending) in entries {
            guard let arguments = try? arguments(pending.policy, name: name) else { continue }
            let counts: [any RedisArgumentConvertible] = [
                configuration.replicaID, pending.calls, pending.failures, pending.slow,
                pending.probeSuccesses, pending.probeFailures, pending.probeIgnored, pending.probeRound,
            ]
            commands.append(.evalSHA(Self.recordScript, keys: [keys.circuitBreaker(name)], arguments: arguments + counts))
            names.append(name)
        }
        do {
            let results = try await client.pipeline(commands)
            for (name, result) in zip(names, results) {
                guard case .success(let reply) = result, let values = reply.array, values.count == 3,
                    let stateName = values[0].string, let newState = CircuitState(rawValue: stateName), let retry = values[1].int
                else { continue }
                apply(name: name, state: newState, retryAfterMs: retry, version: values[2].int)
            }
        } catch {
            // Outcomes of an outage are dropped: the breaker cannot be judged without Redis.
            logger.debug("circuit-breaker outcomes dropped", metadata: ["error": "\(error)", "breakers": "\(names.count)"])
        }
    }

    public func control(key: String, _ action: CircuitControl, policy: CircuitBreakerPolicy) async throws -> CircuitTransition? {
        let target: String
        switch action {
        case .forceOpen: target = CircuitState.forcedOpen.rawValue
        case .disable: target = CircuitState.disabled.rawValue
        case .reset: target = CircuitState.closed.rawValue
        }
        let values = try await run(Self.controlScript, name: key, policy: policy, extra: [target])
        guard values.count == 3, let before = values[0].string.flatMap(CircuitState.init(rawValue:)),
            let after = values[1].string.flatMap(CircuitState.init(rawValue:))
        else { throw RedisClientError(.unexpectedReply, "breaker control returned \(values)") }
        apply(
            name: key, state: after, retryAfterMs: after == .forcedOpen ? policy.openDuration.nanosecondsClamped / 1_000_000 : 0,
            version: values[2].int)
        return before == after ? nil : CircuitTransition(from: before, to: after)
    }

    public func snapshot(key: String, policy: CircuitBreakerPolicy) async throws -> CircuitBreakerSnapshot {
        let reply: RESPValue
        do {
            reply = try await client.send("HGETALL", keys.circuitBreaker(key))
        } catch let error as RedisClientError where error.isUnavailable {
            throw ToolOpsError(.storeUnavailable, "Redis unavailable for circuit breaker \(key)", underlying: error)
        }
        let items = reply.array ?? []
        var fields: [String: String] = [:]
        for index in stride(from: 0, to: items.count - 1, by: 2) {
            if let name = items[index].string, let value = items[index + 1].string { fields[name] = value }
        }
        var counts = CircuitWindowCounts()
        for (name, value) in fields where name.hasPrefix("b:") {
            let parts = value.split(separator: ",").compactMap { Int($0) }
            guard parts.count == 3 else { continue }
            counts.calls += parts[0]
            counts.failures += parts[1]
            counts.slow += parts[2]
        }
        let state = fields["state"].flatMap(CircuitState.init(rawValue:)) ?? .closed
        return CircuitBreakerSnapshot(state: state, counts: counts, halfOpenInFlight: Int(fields["inflight"] ?? "0") ?? 0)
    }
}
