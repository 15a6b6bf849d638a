import Foundation
import Logging
import Synchronization
import ToolOpsCore

/// Helpers shared by the test targets (a library target, not a test target, so that each test
/// target can import it).

/// A thread-safe counter.
public final class Counter: Sendable {
    private let value = Mutex(0)
    public init() {}
    @discardableResult public func increment() -> Int { value.withLock { $0 += 1; return $0 } }
    public var current: Int { value.withLock { $0 } }
}

/// A flag set once, read from anywhere.
public final class Flag: Sendable {
    private let value = Mutex(false)
    public init() {}
    public func set() { value.withLock { $0 = true } }
    public var isSet: Bool { value.withLock { $0 } }
}

/// Tests assert on errors directly; connection warnings would only clutter the CI log.
public let quietLogger = Logger(label: "toolops.test", factory: { _ in SwiftLogNoOpLogHandler() })

/// An executable of this package built next to the test bundle (tests run it as separate processes).
public func builtExecutable(_ name: String) -> String? {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    return nil
}

/// The `toolops` executable (the server).
public func toolopsBinary() -> String? { builtExecutable("toolops") }

/// The `toolops-test-probe` executable (processes that spend a shared rate limit).
public func probeBinary() -> String? { builtExecutable("toolops-test-probe") }

/// A test precondition that did not hold, with what was seen.
public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Polls `condition` every 10 ms for up to `seconds`; returns how long it took to hold, or
/// `nil` — for tests that assert a latency bound on what they waited for.
public func waitFor(seconds: Double, _ condition: () async -> Bool) async -> Duration? {
    let clock = ContinuousClock()
    let start = clock.now
    while clock.now - start < .seconds(seconds) {
        if await condition() { return clock.now - start }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return nil
}

/// How a test's stand-in for a shared store behaves on its next operations: answer, refuse
/// (an outage), stall until cancelled (a hung connection), or answer late while ignoring
/// cancellation (a reply already on its way).
public final class StoreBehaviour: Sendable {
    public enum Mode: Sendable { case answer, down, stall, late(Duration) }
    private let mode = Mutex<Mode>(.answer)
    /// Operations that reached the store.
    public let entered = Counter()
    /// A stalled operation was cancelled (by a deadline or its caller).
    public let cancelled = Flag()
    /// When cancellation of a stalled operation was requested — recorded on the cancelling
    /// thread itself (the deadline watcher's), so it measures the deadline, not how long a
    /// busy cooperative pool takes to run the cancelled task again.
    public let cancelRequested = Moment()

    public init() {}
    public func set(_ mode: Mode) { self.mode.withLock { $0 = mode } }

    /// Called by the stand-in before it does its work.
    public func pass() async throws {
        entered.increment()
        switch mode.withLock({ $0 }) {
        case .answer: return
        case .down: throw ToolOpsError(.storeUnavailable, "the test's store is down")
        case .stall:
            do {
                try await withTaskCancellationHandler {
                    try await Task.sleep(for: .seconds(30))
                } onCancel: {
                    cancelRequested.record()
                }
            } catch {
                cancelled.set()
                throw error
            }
        case .late(let delay):
            // Not cancellable: the answer comes when it comes.
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                DispatchQueue.global().asyncAfter(deadline: .now() + delay.secondsDouble) { continuation.resume() }
            }
        }
    }
}

/// An instant recorded once (the first time), from any thread.
public final class Moment: Sendable {
    private let value = Mutex<ContinuousClock.Instant?>(nil)
    public init() {}
    public func record() { value.withLock { if $0 == nil { $0 = .now } } }
    public var instant: ContinuousClock.Instant? { value.withLock { $0 } }
    /// Time from `start` to the recorded instant, or `nil` if nothing was recorded.
    public func since(_ start: ContinuousClock.Instant) -> Duration? { instant.map { $0 - start } }
}

extension Result where Failure == any Error {
    /// The outcome of an async call, for `async let` (whose errors a test cannot capture otherwise).
    public init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

extension Result {
    /// The error, if it failed.
    public var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
