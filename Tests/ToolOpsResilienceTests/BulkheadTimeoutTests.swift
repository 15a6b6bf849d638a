import Synchronization
import Testing
import ToolOpsCore
@testable import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

/// A tool that blocks until released, so tests control concurrency exactly.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>], entered: Int)>((false, [], 0))
    var entered: Int { state.withLock { $0.entered } }
    func pass() async {
        await withCheckedContinuation { continuation in
            let resume = state.withLock { state -> Bool in
                state.entered += 1
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if resume { continuation.resume() }
        }
    }
    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
    var tool: ToolFunction { ToolFunction { _ in await self.pass(); return ToolResult("done") } }
}

@Suite("Bulkhead", .timeLimit(.minutes(1)))
struct BulkheadTests {
    @Test func limitsConcurrencyAndRefusesWithoutWaiting() async throws {
        let store = MemoryBulkheadStore()
        let bulkhead = try BulkheadMiddleware(.init(maxConcurrent: 2), store: store)
        let gate = Gate()
        let running = (0..<2).map { _ in Task { try await bulkhead.run(try call(), next: gate.tool) } }
        #expect(await eventually { gate.entered == 2 })
        let error = await #expect(throws: ToolOpsError.self) { try await bulkhead.run(try call(), next: ok) }
        #expect(error?.code == .bulkheadFull)
        #expect(try await bulkhead.run(try call("t:other"), next: ok).value == "ok")  // per tool
        gate.open()
        for task in running { _ = try await task.value }
        #expect(store.inUse("bh:tool:t:tool") == 0)
    }

    @Test func waitersAreServedInArrivalOrder() async throws {
        let store = MemoryBulkheadStore()
        let bulkhead = try BulkheadMiddleware(.init(maxConcurrent: 1, maxWait: .seconds(30)), store: store)
        let gate = Gate()
        let holder = Task { try await bulkhead.run(try call(), next: gate.tool) }
        #expect(await eventually { gate.entered == 1 })
        let order = Log()
        var waiters: [Task<ToolResult, any Error>] = []
        for index in 0..<5 {
            waiters.append(Task {
                try await bulkhead.run(try call(), next: ToolFunction { _ in order.append(index); return ToolResult("w") })
            })
            #expect(await eventually { store.waiting("bh:tool:t:tool") == index + 1 })
        }
        gate.open()
        _ = try await holder.value
        for waiter in waiters { _ = try await waiter.value }
        #expect(order.all == [0, 1, 2, 3, 4])
        #expect(store.inUse("bh:tool:t:tool") == 0 && store.waiting("bh:tool:t:tool") == 0)
    }

    @Test func waitTimesOutOnTheClock() async throws {
        let clock = ManualClock()
        let store = MemoryBulkheadStore(clock: clock)
        let bulkhead = try BulkheadMiddleware(.init(maxConcurrent: 1, maxWait: .seconds(2)), store: store)
        let gate = Gate()
        let holder = Task { try await bulkhead.run(try call(), next: gate.tool) }
        #expect(await eventually { gate.entered == 1 })
        let waiter = Task { try await bulkhead.run(try call(), next: ok) }
        #expect(await eventually { store.waiting("bh:tool:t:tool") == 1 && clock.sleeperCount == 1 })
        clock.advance(by: .seconds(2))
        let error = await #expect(throws: ToolOpsError.self) { try await waiter.value }
        #expect(error?.code == .bulkheadFull)
        #expect(store.waiting("bh:tool:t:tool") == 0)
        gate.open()
        _ = try await holder.value
        #expect(store.inUse("bh:tool:t:tool") == 0)
    }

    @Test func permitsAreReleasedOnErrorsAndCancellation() async throws {
        let store = MemoryBulkheadStore()
        let bulkhead = try BulkheadMiddleware(.init(maxConcurrent: 1, maxWait: .seconds(30)), store: store)
        await #expect(throws: Boom.self) { try await bulkhead.run(try call(), next: ToolFunction { _ in throw Boom() }) }
        #expect(store.inUse("bh:tool:t:tool") == 0)
        // Cancel a running holder and a queued waiter.
        let sleepy = ToolFunction { _ in try await Task.sleep(for: .seconds(60)); return ToolResult("late") }
        let holder = Task { try await bulkhead.run(try call(), next: sleepy) }
        #expect(await eventually { store.inUse("bh:tool:t:tool") == 1 })
        let waiter = Task { try await bulkhead.run(try call(), next: ok) }
        #expect(await eventually { store.waiting("bh:tool:t:tool") == 1 })
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        holder.cancel()
        await #expect(throws: CancellationError.self) { try await holder.value }
        #expect(store.inUse("bh:tool:t:tool") == 0 && store.waiting("bh:tool:t:tool") == 0)
    }

    @Test func aReleasedPermitCannotFreeAnotherSlot() async throws {
        let store = MemoryBulkheadStore()
        let first = try await store.acquire(key: "k", limit: 1, lease: .seconds(1), maxWait: .zero)
        await store.release(first)
        let second = try await store.acquire(key: "k", limit: 1, lease: .seconds(1), maxWait: .zero)
        await store.release(first)  // a late duplicate release
        #expect(store.inUse("k") == 1)
        await store.release(second)
        #expect(store.inUse("k") == 0)
    }

    @Test func shadowModeLetsCallsThrough() async throws {
        let events = Events()
        let bulkhead = try BulkheadMiddleware(.init(maxConcurrent: 1, mode: .shadow, observer: events.observer))
        let gate = Gate()
        let holder = Task { try await bulkhead.run(try call(), next: gate.tool) }
        #expect(await eventually { gate.entered == 1 })
        #expect(try await bulkhead.run(try call(), next: ok).value == "ok")
        // The holder took the slot; the second call would have been refused, and ran anyway.
        let rejected = events.all.filter { if case .bulkheadRejected(_, _, shadow: true) = $0 { true } else { false } }
        let acquired = events.all.filter { if case .bulkheadAcquired = $0 { true } else { false } }
        #expect(rejected.count == 1)
        #expect(acquired.count == 1)
        gate.open()
        _ = try await holder.value
        #expect(events.all.filter { if case .bulkheadReleased = $0 { true } else { false } }.count == 1)
    }

    @Test func invalidConfigurations() {
        #expect(throws: ToolOpsError.self) { try BulkheadMiddleware(.init(maxConcurrent: 0)) }
        #expect(throws: ToolOpsError.self) { try BulkheadMiddleware(.init(maxWait: .seconds(-1))) }
    }
}

@Suite("Timeout", .timeLimit(.minutes(1)))
struct TimeoutTests {
    @Test func cancelsTheWorkAndThrowsTimedOut() async throws {
        let clock = ManualClock()
        let timeout = try TimeoutMiddleware(.init(timeout: .seconds(1)), clock: clock)
        let cancelled = Flag()
        let slow = ToolFunction { _ in
            do { try await clock.sleep(for: .seconds(10)) } catch {
                cancelled.set()
                throw error
            }
            return ToolResult("late")
        }
        let task = Task { try await timeout.run(try call(), next: slow) }
        #expect(await eventually { clock.sleeperCount == 2 })
        clock.advance(by: .seconds(1))
        let error = await #expect(throws: ToolOpsError.self) { try await task.value }
        #expect(error?.code == .timedOut)
        // Nothing keeps running: the work saw its cancellation before run() returned.
        #expect(cancelled.isSet)
        #expect(clock.sleeperCount == 0)
    }

    @Test func systemClockPathCancelsOnlyTheWork() async throws {
        // SystemClock uses the shared deadline watcher instead of a sleeping child task.
        let timeout = try TimeoutMiddleware(.init(timeout: .milliseconds(50)))
        let cancelled = Flag()
        let cancelRequested = Moment()
        let slow = ToolFunction { _ in
            do {
                try await withTaskCancellationHandler { try await Task.sleep(for: .seconds(30)) } onCancel: { cancelRequested.record() }
            } catch {
                cancelled.set()
                throw error
            }
            return ToolResult("late")
        }
        let started = ContinuousClock.now
        let error = await #expect(throws: ToolOpsError.self) { try await timeout.run(try call(), next: slow) }
        #expect(error?.code == .timedOut)
        #expect(cancelled.isSet)
        // Cancelled at 50 ms, with room for a loaded 2-core machine — but a watcher a second
        // late fails. (Measured on the watcher's thread: a busy pool delays only the return.)
        #expect(try #require(cancelRequested.since(started)) < .seconds(1))
        // The caller's own task was not cancelled: it can go on (e.g. to retry).
        #expect(!Task.isCancelled)
        #expect(try await timeout.run(try call(), next: ok).value == "ok")
        // Many concurrent deadlines, most met, some missed.
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<200 {
                group.addTask {
                    let tool = index % 10 == 0 ? slow : ok
                    do { _ = try await timeout.run(try call(), next: tool); return true } catch { return false }
                }
            }
            var succeeded = 0
            for try await outcome in group where outcome { succeeded += 1 }
            #expect(succeeded == 180)
        }
    }

    @Test func systemClockPathKeepsTaskLocalsAndFollowsTheCallersCancellation() async throws {
        enum Probe { @TaskLocal static var value = "unset" }
        let timeout = try TimeoutMiddleware(.init(timeout: .seconds(30)))
        // The work runs in a task of its own, yet sees the caller's task-local values
        // (ServiceContext travels this way) both before and after it first suspends.
        let echo = ToolFunction { _ in
            let before = Probe.value
            await Task.yield()
            return ToolResult(.string(before + "/" + Probe.value))
        }
        let seen = try await Probe.$value.withValue("caller") { try await timeout.run(try call(), next: echo) }
        #expect(seen.value == "caller/caller")

        // Cancelling the caller cancels the work, and the call ends with it.
        let started = Flag()
        let cancelled = Flag()
        let slow = ToolFunction { _ in
            started.set()
            do { try await Task.sleep(for: .seconds(30)) } catch {
                cancelled.set()
                throw error
            }
            return ToolResult("late")
        }
        let caller = Task { try await timeout.run(try call(), next: slow) }
        #expect(await eventually { started.isSet })
        caller.cancel()
        await #expect(throws: CancellationError.self) { try await caller.value }
        #expect(cancelled.isSet)

        // A caller that is already cancelled runs the work cancelled.
        let sawCancellation = Flag()
        let checks = ToolFunction { _ in
            if Task.isCancelled { sawCancellation.set() }
            return ToolResult("ran")
        }
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await timeout.run(try call(), next: checks)
        }
        // It ran, saw the cancellation, and its result stands (it returned instead of throwing).
        #expect(try await early.value.value == "ran")
        #expect(sawCancellation.isSet)
    }

    @Test func systemClockDeadlineBeyondTheIdleTick() async throws {
        // A deadline later than the watcher's idle tick registers without waking the watcher
        // thread; the thread must still find it on its next tick and cancel in time.
        let timeout = try TimeoutMiddleware(.init(timeout: .milliseconds(400)))
        for _ in 0..<2 {
            let cancelRequested = Moment()
            let slow = ToolFunction { _ in
                try await withTaskCancellationHandler { try await Task.sleep(for: .seconds(30)) } onCancel: { cancelRequested.record() }
                return ToolResult("late")
            }
            let started = ContinuousClock.now
            let error = await #expect(throws: ToolOpsError.self) { try await timeout.run(try call(), next: slow) }
            #expect(error?.code == .timedOut)
            // Found on the watcher's next idle tick (≤ 250 ms later) — not seconds late.
            let elapsed = try #require(cancelRequested.since(started))
            #expect(elapsed >= .milliseconds(400) && elapsed < .milliseconds(1_400))
        }
    }

    @Test func fastWorkAndErrorsPassThrough() async throws {
        let timeout = try TimeoutMiddleware(.init(timeout: .seconds(5)))
        #expect(try await timeout.run(try call(), next: ok).value == "ok")
        await #expect(throws: Boom.self) { try await timeout.run(try call(), next: ToolFunction { _ in throw Boom() }) }
    }

    @Test func perToolOverridesAndShadowMode() async throws {
        let clock = ManualClock()
        let events = Events()
        let timeout = try TimeoutMiddleware(
            .init(timeout: .seconds(1), overrides: [(try ToolPattern("slow:*"), .seconds(60))], mode: .shadow, observer: events.observer),
            clock: clock)
        #expect(timeout.timeout(for: try ToolID("slow:x")) == .seconds(60))
        #expect(timeout.timeout(for: try ToolID("fast:x")) == .seconds(1))
        let slow = ToolFunction { _ in clock.advance(by: .seconds(2)); return ToolResult("finished") }
        #expect(try await timeout.run(try call(), next: slow).value == "finished")
        #expect(events.all.count == 1)
        #expect(throws: ToolOpsError.self) { try TimeoutMiddleware(.init(timeout: .zero)) }
    }
}

@Suite("Recommended order", .timeLimit(.minutes(1)))
struct OrderTests {
    @Test func theBulkheadIsNotHeldDuringRetrySleeps() async throws {
        let clock = ManualClock()
        let bulkheads = MemoryBulkheadStore(clock: clock)
        let attempts = Counter()
        let flaky = ToolFunction { _ in
            if attempts.increment() == 1 { throw Boom() }
            return ToolResult("ok")
        }
        let events = Events()
        let pipeline = ToolPipeline(runner: flaky) {
            RetryMiddleware(
                .init(policy: try! RetryPolicy(initialDelay: .seconds(1), maxDelay: .seconds(1), jitter: .none), observer: events.observer),
                clock: clock)
            CircuitBreakerMiddleware(.init(policy: try! CircuitBreakerPolicy()), store: MemoryCircuitBreakerStore(clock: clock), clock: clock)
            try! BulkheadMiddleware(.init(maxConcurrent: 1), store: bulkheads)
            try! TimeoutMiddleware(.init(timeout: .seconds(5)), clock: clock)
        }
        let task = Task { try await pipeline.run(try call()) }
        // The retry announces its back-off sleep only after the failed attempt left the bulkhead.
        #expect(await eventually { !events.all.isEmpty && clock.sleeperCount == 1 })
        #expect(bulkheads.inUse("bh:tool:t:tool") == 0)
        clock.advance(by: .seconds(1))
        #expect(try await task.value.value == "ok")
    }
}
