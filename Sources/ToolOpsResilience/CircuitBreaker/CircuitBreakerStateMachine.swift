import ToolOpsCore

/// A state change, reported to observers after the lock is released.
public struct CircuitTransition: Sendable, Hashable {
    public var from: CircuitState
    public var to: CircuitState
    public init(from: CircuitState, to: CircuitState) {
        self.from = from
        self.to = to
    }
}

/// The breaker's answer to "may this call run?".
public struct CircuitAdmission: Sendable, Hashable {
    public var allowed: Bool
    /// The call is a half-open probe: its outcome decides the breaker's state.
    public var probe: Bool
    /// For a refusal: when probes will be admitted.
    public var retryAfter: Duration
    public var transition: CircuitTransition?
    /// For a probe: the half-open round it belongs to (opaque; 0 when unknown). Pass it back
    /// to ``CircuitBreakerStore/record(key:outcome:probe:round:policy:)`` so that a probe whose
    /// round lapsed cannot count toward the next one.
    public var probeRound: Int64
    public init(allowed: Bool, probe: Bool, retryAfter: Duration, transition: CircuitTransition?, probeRound: Int64 = 0) {
        self.allowed = allowed
        self.probe = probe
        self.retryAfter = retryAfter
        self.transition = transition
        self.probeRound = probeRound
    }
}

/// Counts of the calls in the window.
public struct CircuitWindowCounts: Sendable, Hashable {
    public init() {}
    public var calls = 0
    public var failures = 0
    public var slow = 0
    public var failureRate: Double { calls == 0 ? 0 : Double(failures) / Double(calls) }
    public var slowRate: Double { calls == 0 ? 0 : Double(slow) / Double(calls) }
}

/// The breaker's logic, free of I/O and clocks (time is passed in), so every store — memory,
/// file, and the Redis script's mirror — shares it and it can be tested directly.
public struct CircuitBreakerStateMachine: Sendable, Hashable {
    public private(set) var state: CircuitState = .closed
    /// When the breaker last opened (nanoseconds on the store's clock).
    public private(set) var openedAt: Int64 = 0
    public private(set) var halfOpenInFlight = 0
    public private(set) var halfOpenSuccesses = 0
    /// When the current half-open round began. Probes are leased for one open duration: a
    /// round whose probes never report (a crashed holder, lost outcomes) starts over.
    public private(set) var halfOpenAt: Int64 = 0
    /// Count window: one byte per call, bit 0 failure, bit 1 slow.
    var ring: [UInt8] = []
    var ringNext = 0
    /// Time window: (bucket start, calls, failures, slow).
    var buckets: [Bucket] = []
    public private(set) var counts = CircuitWindowCounts()

    struct Bucket: Sendable, Hashable {
        var start: Int64
        var calls: Int
        var failures: Int
        var slow: Int
    }

    public init() {}

    public mutating func admit(now: Int64, policy: CircuitBreakerPolicy) -> CircuitAdmission {
        var transition: CircuitTransition? = nil
        switch state {
        case .closed, .disabled:
            return CircuitAdmission(allowed: true, probe: false, retryAfter: .zero, transition: nil)
        case .forcedOpen:
            return CircuitAdmission(allowed: false, probe: false, retryAfter: policy.openDuration, transition: nil)
        case .open:
            let reopenAt = openedAt &+ policy.openDuration.nanosecondsClamped
            if now < reopenAt {
                return CircuitAdmission(allowed: false, probe: false, retryAfter: .nanoseconds(reopenAt - now), transition: nil)
            }
            transition = move(to: .halfOpen)
            halfOpenAt = now
            fallthrough
        case .halfOpen:
            if halfOpenInFlight > 0 && now >= halfOpenAt &+ policy.openDuration.nanosecondsClamped {
                // The round's probes are overdue: their leases lapse and a new round begins.
                halfOpenInFlight = 0
                halfOpenSuccesses = 0
                halfOpenAt = now
            }
            if halfOpenInFlight + halfOpenSuccesses < policy.permittedHalfOpenCalls {
                halfOpenInFlight += 1
                return CircuitAdmission(allowed: true, probe: true, retryAfter: .zero, transition: transition, probeRound: halfOpenAt)
            }
            // Probes are out; their results arrive shortly.
            let hint = min(policy.openDuration, .seconds(1))
            return CircuitAdmission(allowed: false, probe: false, retryAfter: hint, transition: transition)
        }
    }

    /// Records a finished call. `probe` must be the admission's flag and `round` its
    /// ``CircuitAdmission/probeRound`` (`nil`: unknown, counted in the current round).
    @discardableResult
    public mutating func record(
        _ outcome: CallOutcome, probe: Bool, round: Int64? = nil, now: Int64, policy: CircuitBreakerPolicy
    ) -> CircuitTransition? {
        if probe {
            guard state == .halfOpen else { return nil }  // an operator moved the breaker meanwhile
            // A probe of a round that lapsed: its slot was given to the new round already.
            if let round, round != 0, round != halfOpenAt { return nil }
            halfOpenInFlight = max(0, halfOpenInFlight - 1)
            switch outcome {
            case .ignored:
                return nil
            case .failure:
                return open(now: now)
            case .success(let duration):
                if duration >= policy.slowCallDuration { return open(now: now) }  // a slow probe is a failed probe
                halfOpenSuccesses += 1
                if halfOpenSuccesses >= policy.permittedHalfOpenCalls {
                    resetWindow()
                    return move(to: .closed)
                }
                return nil
            }
        }
        guard state == .closed else { return nil }  // late results from before the breaker opened
        let failed: Bool
        let duration: Duration
        switch outcome {
        case .ignored: return nil
        case .success(let d): failed = false; duration = d
        case .failure(let d): failed = true; duration = d
        }
        add(failed: failed, slow: duration >= policy.slowCallDuration, now: now, policy: policy)
        if counts.calls >= policy.minimumCalls
            && (counts.failureRate >= policy.failureRateThreshold || counts.slowRate >= policy.slowCallRateThreshold)
        {
            return open(now: now)
        }
        return nil
    }

    /// Operator controls.
    public mutating func forceOpen() -> CircuitTransition? { move(to: .forcedOpen) }
    public mutating func disable() -> CircuitTransition? { move(to: .disabled) }
    public mutating func reset() -> CircuitTransition? {
        resetWindow()
        return move(to: .closed)
    }

    /// Whether forgetting this breaker changes no later decision: it is closed (not open,
    /// half-open or held by an operator) and its window holds nothing — a time window whose
    /// buckets all expired by `now` (`timeWindow`: its length in ns), or a count window that
    /// never saw a call (a count window's old calls keep weighing on its rates).
    mutating func isForgettable(now: Int64, timeWindow: Int64?) -> Bool {
        guard state == .closed else { return false }
        if let timeWindow {
            expire(now: now, duration: .nanoseconds(timeWindow))
            return buckets.isEmpty
        }
        return ring.isEmpty
    }

    /// The window's counts as of `now` (time windows drop expired buckets).
    public mutating func windowCounts(now: Int64, policy: CircuitBreakerPolicy) -> CircuitWindowCounts {
        if case .time(let duration) = policy.window.kind { expire(now: now, duration: duration) }
        return counts
    }

    private mutating func open(now: Int64) -> CircuitTransition? {
        openedAt = now
        return move(to: .open)
    }

    private mutating func move(to next: CircuitState) -> CircuitTransition? {
        guard next != state else { return nil }
        let transition = CircuitTransition(from: state, to: next)
        state = next
        halfOpenInFlight = 0
        halfOpenSuccesses = 0
        return transition
    }

    private mutating func resetWindow() {
        ring.removeAll()
        ringNext = 0
        buckets.removeAll()
        counts = CircuitWindowCounts()
    }

    private mutating func add(failed: Bool, slow: Bool, now: Int64, policy: CircuitBreakerPolicy) {
        switch policy.window.kind {
        case .count(let size):
            let entry: UInt8 = (failed ? 1 : 0) | (slow ? 2 : 0)
            if ring.count < size {
                ring.append(entry)
            } else {
                if ring.count > size {  // the policy's window shrank
                    ring = Array(ring.suffix(size))
                    ringNext = 0
                    recount()
                }
                let old = ring[ringNext]
                counts.calls -= 1
                counts.failures -= Int(old & 1)
                counts.slow -= Int((old >> 1) & 1)
                ring[ringNext] = entry
                ringNext = (ringNext + 1) % size
            }
            counts.calls += 1
            counts.failures += failed ? 1 : 0
            counts.slow += slow ? 1 : 0
        case .time(let duration):
            expire(now: now, duration: duration)
            let width = max(1, duration.nanosecondsClamped / 20)
            let start = now - now % width
            if buckets.last?.start != start { buckets.append(Bucket(start: start, calls: 0, failures: 0, slow: 0)) }
            buckets[buckets.count - 1].calls += 1
            buckets[buckets.count - 1].failures += failed ? 1 : 0
            buckets[buckets.count - 1].slow += slow ? 1 : 0
            counts.calls += 1
            counts.failures += failed ? 1 : 0
            counts.slow += slow ? 1 : 0
        }
    }

    private mutating func expire(now: Int64, duration: Duration) {
        let cutoff = now - duration.nanosecondsClamped
        var dropped = 0
        while dropped < buckets.count, buckets[dropped].start + max(1, duration.nanosecondsClamped / 20) <= cutoff {
            counts.calls -= buckets[dropped].calls
            counts.failures -= buckets[dropped].failures
            counts.slow -= buckets[dropped].slow
            dropped += 1
        }
        if dropped > 0 { buckets.removeFirst(dropped) }
    }

    private mutating func recount() {
        counts = CircuitWindowCounts()
        for entry in ring {
            counts.calls += 1
            counts.failures += Int(entry & 1)
            counts.slow += Int((entry >> 1) & 1)
        }
    }
}

extension CircuitBreakerStateMachine {
    /// The state as JSON, for stores that persist it (the file store).
    public var json: JSONValue {
        .object([
            "state": .string(state.rawValue),
            "openedAt": .integer(openedAt),
            "halfOpenInFlight": .integer(Int64(halfOpenInFlight)),
            "halfOpenSuccesses": .integer(Int64(halfOpenSuccesses)),
            "halfOpenAt": .integer(halfOpenAt),
            "ring": .string(String(ring.map { Character(Unicode.Scalar($0 + 48)) })),
            "ringNext": .integer(Int64(ringNext)),
            "buckets": .array(buckets.map { .array([.integer($0.start), .integer(Int64($0.calls)), .integer(Int64($0.failures)), .integer(Int64($0.slow))]) }),
        ])
    }

    /// Restores a state written by ``json``; `nil` for anything malformed (the caller then
    /// starts from a fresh, closed breaker). Counts are recomputed, never trusted.
    public init?(json: JSONValue) {
        guard let stateName = json["state"]?.stringValue, let state = CircuitState(rawValue: stateName),
            let openedAt = json["openedAt"]?.int64Value,
            let inFlight = json["halfOpenInFlight"]?.int64Value, inFlight >= 0, inFlight < 1_000_000,
            let successes = json["halfOpenSuccesses"]?.int64Value, successes >= 0, successes < 1_000_000,
            let halfOpenAt = json["halfOpenAt"]?.int64Value,
            let ringText = json["ring"]?.stringValue, ringText.utf8.count <= 100_000,
            let ringNext = json["ringNext"]?.int64Value,
            case .array(let bucketValues)? = json["buckets"], bucketValues.count <= 10_000
        else { return nil }
        var ring: [UInt8] = []
        for byte in ringText.utf8 {
            guard byte >= 48 && byte <= 51 else { return nil }
            ring.append(byte - 48)
        }
        guard ringNext >= 0 && (ring.isEmpty ? ringNext == 0 : ringNext < ring.count) else { return nil }
        var buckets: [Bucket] = []
        for value in bucketValues {
            guard case .array(let fields) = value, fields.count == 4,
                let start = fields[0].int64Value, let calls = fields[1].int64Value,
                let failures = fields[2].int64Value, let slow = fields[3].int64Value,
                calls >= 0, failures >= 0, slow >= 0, failures <= calls, slow <= calls, calls < 1 << 40
            else { return nil }
            buckets.append(Bucket(start: start, calls: Int(calls), failures: Int(failures), slow: Int(slow)))
        }
        self.init()
        self.state = state
        self.openedAt = openedAt
        self.halfOpenInFlight = Int(inFlight)
        self.halfOpenSuccesses = Int(successes)
        self.halfOpenAt = halfOpenAt
        self.ring = ring
        self.ringNext = Int(ringNext)
        self.buckets = buckets
        recount()
        for bucket in buckets {
            counts.calls += bucket.calls
            counts.failures += bucket.failures
            counts.slow += bucket.slow
        }
    }
}
