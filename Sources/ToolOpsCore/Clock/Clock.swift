#if canImport(Glibc)
import Glibc
#endif

/// A point in time on a ``ToolOpsClock``, in nanoseconds since the clock's origin.
public struct ClockInstant: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64
    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
    public static func + (lhs: Self, rhs: Duration) -> Self { Self(nanoseconds: lhs.nanoseconds &+ rhs.nanosecondsClamped) }
    public static func - (lhs: Self, rhs: Duration) -> Self { Self(nanoseconds: lhs.nanoseconds &- rhs.nanosecondsClamped) }
    public static func - (lhs: Self, rhs: Self) -> Duration { .nanoseconds(lhs.nanoseconds &- rhs.nanoseconds) }
    public var description: String { "\(nanoseconds)ns" }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at the `Int64` range.
    public var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = product.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflow2 ? (product < 0 ? .min : .max) : sum
    }

    /// The duration in seconds as a `Double`.
    public var secondsDouble: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }

    /// The duration in milliseconds as a `Double` (whole milliseconds stay whole: 200 ms is
    /// `200.0`, which `secondsDouble * 1000` is not).
    public var millisecondsDouble: Double { Double(components.seconds) * 1_000 + Double(components.attoseconds) / 1e15 }
}

/// Time for policies, injectable so that tests never sleep.
public protocol ToolOpsClock: Sendable {
    var now: ClockInstant { get }
    /// Sleeps until `deadline`; throws `CancellationError` when the task is cancelled.
    func sleep(until deadline: ClockInstant) async throws
}

extension ToolOpsClock {
    public func sleep(for duration: Duration) async throws { try await sleep(until: now + duration) }
}

/// The system's monotonic clock (`CLOCK_MONOTONIC`): one timeline for every process on a
/// host, so file-backed state can be shared between processes.
public struct SystemClock: ToolOpsClock {
    public init() {}
    public var now: ClockInstant { .reading(CLOCK_MONOTONIC) }
    public func sleep(until deadline: ClockInstant) async throws { try await sleepUntil(deadline, now: now) }
}

extension ClockInstant {
    /// The current time of a POSIX clock.
    static func reading(_ clock: clockid_t) -> ClockInstant {
        var spec = timespec()
        clock_gettime(clock, &spec)
        return ClockInstant(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }
}

/// `Task.sleep` for the time left until `deadline` on a clock that runs at real speed.
private func sleepUntil(_ deadline: ClockInstant, now: ClockInstant) async throws {
    let remaining = deadline - now
    if remaining > .zero { try await Task.sleep(for: remaining) } else { try Task.checkCancellation() }
}

/// Wall-clock time: instants are nanoseconds since the Unix epoch (`CLOCK_REALTIME`). For
/// state shared between processes or hosts, such as cache entries; resilience policies use
/// the monotonic ``SystemClock``.
public struct WallClock: ToolOpsClock {
    public init() {}
    public var now: ClockInstant { .reading(CLOCK_REALTIME) }
    public func sleep(until deadline: ClockInstant) async throws { try await sleepUntil(deadline, now: now) }
}
