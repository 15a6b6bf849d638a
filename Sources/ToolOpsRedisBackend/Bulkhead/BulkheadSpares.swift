import ToolOpsCore

/// Slots a replica keeps for a moment after its calls end — the state machine of
/// ``RedisBulkheadStore``'s slot reuse, without I/O.
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
        /// Permits tracked at most (keys may come from callers); beyond, slots go back at once.
        var maximumTracked = 100_000
    }

    struct Spare {
        var token: UInt64
        var renewedAt: ClockInstant
        var until: ClockInstant
    }

    private struct Held {
        var key: String
        var renewedAt: ClockInstant
        var capacity: Int
    }

    let configuration: Configuration
    private var spares: [String: [Spare]] = [:]
    private var held: [UInt64: Held] = [:]

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
        // The list is changed where it lies (`spares[key]?.popLast()`): taken out into a
        // variable, it would be copied whole on every call while the dictionary still held it.
        guard spares[key] != nil else { return (nil, []) }
        var stale: [UInt64] = []
        var found: Spare?
        while found == nil, let spare = spares[key]?.popLast() {
            if now < spare.until && now - spare.renewedAt < lease / 3 { found = spare } else { stale.append(spare.token) }
        }
        if spares[key]?.isEmpty == true { spares[key] = nil }
        guard let found else { return (nil, stale) }
        held[found.token] = Held(key: key, renewedAt: found.renewedAt, capacity: capacity(limit: limit))
        return (found.token, stale)
    }

    /// Redis granted `token` for a call on `key` (a bulkhead of `limit`) at `now`: tracked, so
    /// its release may keep it, when the bulkhead is large enough to reuse slots.
    mutating func granted(_ token: UInt64, key: String, limit: Int, now: ClockInstant) {
        let capacity = capacity(limit: limit)
        guard capacity > 0, held.count < configuration.maximumTracked else { return }
        held[token] = Held(key: key, renewedAt: now, capacity: capacity)
    }

    /// When `token`'s lease was last renewed, if it is tracked.
    func renewedAt(_ token: UInt64) -> ClockInstant? { held[token]?.renewedAt }

    /// `token`'s lease was renewed at `now`.
    mutating func renewed(_ token: UInt64, now: ClockInstant) {
        held[token]?.renewedAt = now
    }

    /// `token`'s call ended: `true` if its slot is kept as a spare, `false` if it goes back to
    /// Redis now (always when not `keep`: nothing would give it back later).
    mutating func released(_ token: UInt64, now: ClockInstant, keep: Bool = true) -> Bool {
        guard let slot = held.removeValue(forKey: token), keep else { return false }
        guard (spares[slot.key]?.count ?? 0) < slot.capacity else { return false }
        spares[slot.key, default: []].append(Spare(token: token, renewedAt: slot.renewedAt, until: now + configuration.hold))
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
