import ToolOpsCore

/// The permits a replica holds — those of its calls in flight and the slots it keeps for a
/// moment after its calls end — the state machine of ``RedisBulkheadStore``'s lease renewal
/// and slot reuse, without I/O. One table serves both: a call's permit is looked up once when
/// it is granted and once when it is released.
///
/// On a large bulkhead (a limit of at least `divisor`: 16 by default), a released slot is
/// not given back to Redis at once: it stays with this replica for `hold` (10 ms), and the
/// replica's next call on the same bulkhead takes it without a round trip. A busy replica
/// thus cycles its slots locally instead of paying two round trips a call. A replica keeps
/// at most `limit / divisor` spare slots per bulkhead, and only for calls that do not wait
/// (with `maxWait`, callers queue first come first served across replicas, and a reused slot
/// would jump that queue). The cost: for up to `hold` after a call ends, other replicas see
/// its slot in use. A spare is reused only while its lease is fresh (renewed within a third
/// of the lease), so the new call's renewals keep it.
struct BulkheadSpares {
    struct Configuration: Sendable {
        /// How long a released slot is kept for this replica's next call; 0 turns reuse off.
        var hold: Duration = .milliseconds(10)
        /// A bulkhead keeps at most `limit / divisor` spares (so reuse starts at this limit).
        var divisor = 16
        /// Permits tracked at most (keys may come from callers); beyond, a permit is neither
        /// renewed here nor kept: its caller renews it and its slot goes back at once.
        var maximumTracked = 100_000
    }

    struct Spare {
        var token: UInt64
        var renewedAt: ClockInstant
        var until: ClockInstant
    }

    /// A permit of a call in flight.
    struct InFlight {
        var key: String
        var lease: Duration
        var renewedAt: ClockInstant
        /// The spares its bulkhead may keep (0: its slot goes back to Redis when released).
        var capacity: Int
        /// When to try again after a renewal failed (Redis unreachable); `nil`: a third of a
        /// lease after `renewedAt`. Kept apart from `renewedAt`, which says how fresh the lease
        /// really is when its slot is offered for reuse.
        var retryAt: ClockInstant? = nil
    }

    let configuration: Configuration
    private var spares: [String: [Spare]] = [:]
    private(set) var inFlight: [UInt64: InFlight] = [:]

    init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    /// Spares kept now, over every bulkhead.
    var spareCount: Int { spares.values.reduce(0) { $0 + $1.count } }

    /// The spares a bulkhead of `limit` may keep.
    func capacity(limit: Int) -> Int {
        configuration.hold > .zero && configuration.divisor > 0 ? limit / configuration.divisor : 0
    }

    /// A spare slot for a call on `key` (its lease id), if one is kept and fresh; and the
    /// spares found stale on the way, to give back to Redis.
    mutating func take(key: String, limit: Int, lease: Duration, now: ClockInstant) -> (token: UInt64?, stale: [UInt64]) {
        // One lookup; the list is then changed where it lies (taken out into a variable, it
        // would be copied whole on every call while the dictionary still held it).
        guard let index = spares.index(forKey: key) else { return (nil, []) }
        var stale: [UInt64] = []
        var found: Spare?
        while found == nil, let spare = spares.values[index].popLast() {
            if now < spare.until && now - spare.renewedAt < lease / 3 { found = spare } else { stale.append(spare.token) }
        }
        if spares.values[index].isEmpty { spares.remove(at: index) }
        guard let found else { return (nil, stale) }
        inFlight[found.token] = InFlight(key: key, lease: lease, renewedAt: found.renewedAt, capacity: capacity(limit: limit))
        return (found.token, stale)
    }

    /// Redis granted `token` for a call on `key` (a bulkhead of `limit`) at `now`: tracked —
    /// its lease renewed here while the call runs and, when `reusable` and the bulkhead is
    /// large enough, its slot kept when released. Returns whether it is tracked (not beyond
    /// ``Configuration/maximumTracked``).
    @discardableResult
    mutating func granted(_ token: UInt64, key: String, limit: Int, lease: Duration, now: ClockInstant, reusable: Bool = true) -> Bool {
        guard inFlight.count < configuration.maximumTracked else { return false }
        inFlight[token] = InFlight(key: key, lease: lease, renewedAt: now, capacity: reusable ? capacity(limit: limit) : 0)
        return true
    }

    /// `token`'s lease was renewed at `now`.
    mutating func renewed(_ token: UInt64, now: ClockInstant) {
        inFlight[token]?.renewedAt = now
        inFlight[token]?.retryAt = nil
    }

    /// Renewing `token`'s lease failed (Redis unreachable): try again at `retryAt`; the lease
    /// stays as fresh as its last renewal.
    mutating func renewalFailed(_ token: UInt64, retryAt: ClockInstant) {
        inFlight[token]?.retryAt = retryAt
    }

    /// `token`'s lease had lapsed when renewed: nothing left to renew, or to keep.
    mutating func lapsed(_ token: UInt64) {
        inFlight[token] = nil
    }

    /// The permits in flight (with a lease of at least `minimumLease`) due for renewal a third
    /// of a lease after their last one, and when the next one falls due (at the latest `now +
    /// check`).
    func dueForRenewal(now: ClockInstant, minimumLease: Duration, check: Duration) -> (due: [(token: UInt64, key: String, lease: Duration)], next: ClockInstant) {
        var due: [(token: UInt64, key: String, lease: Duration)] = []
        var next = now + check
        for (token, permit) in inFlight where permit.lease >= minimumLease {
            let at = permit.retryAt ?? permit.renewedAt + permit.lease / 3
            if at <= now { due.append((token, permit.key, permit.lease)) } else { next = min(next, at) }
        }
        return (due, next)
    }

    /// `token`'s call ended: `true` if its slot is kept as a spare, `false` if it goes back to
    /// Redis now (always when not `keep`: nothing would give it back later).
    mutating func released(_ token: UInt64, now: ClockInstant, keep: Bool = true) -> Bool {
        guard let permit = inFlight.removeValue(forKey: token), keep, permit.capacity > 0 else { return false }
        // One lookup: the list is added if missing (capacity > 0, so it never stays empty)
        // and appended to where it lies.
        let spare = Spare(token: token, renewedAt: permit.renewedAt, until: now + configuration.hold)
        return Self.append(spare, to: &spares[permit.key, default: []], capacity: permit.capacity)
    }

    private static func append(_ spare: Spare, to list: inout [Spare], capacity: Int) -> Bool {
        guard list.count < capacity else { return false }
        list.append(spare)
        return true
    }

    /// Spares whose hold has ended (all of them with `all`), by bulkhead: to give back.
    mutating func expired(now: ClockInstant, all: Bool = false) -> [String: [UInt64]] {
        var due: [String: [UInt64]] = [:]
        for (key, list) in spares {
            let (ended, kept) = (list.filter { all || now >= $0.until }, list.filter { !all && now < $0.until })
            if !ended.isEmpty { due[key] = ended.map(\.token) }
            spares[key] = kept.isEmpty ? nil : kept
        }
        return due
    }

    /// When the next spare's hold ends.
    var nextExpiry: ClockInstant? { spares.values.lazy.flatMap { $0 }.map(\.until).min() }
}
