import Testing
import ToolOpsCore
@testable import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Circuit breaker state machine", .timeLimit(.minutes(1)))
struct CircuitBreakerStateMachineTests {
    let policy = try! CircuitBreakerPolicy(
        window: .count(10), failureRateThreshold: 0.5, slowCallDuration: .seconds(2), slowCallRateThreshold: 0.8,
        minimumCalls: 4, openDuration: .seconds(30), permittedHalfOpenCalls: 3)
    let ms: Int64 = 1_000_000

    func fail(_ m: inout CircuitBreakerStateMachine, now: Int64 = 0) -> CircuitTransition? {
        m.record(.failure(duration: .milliseconds(5)), probe: false, now: now, policy: policy)
    }
    func succeed(_ m: inout CircuitBreakerStateMachine, now: Int64 = 0) -> CircuitTransition? {
        m.record(.success(duration: .milliseconds(5)), probe: false, now: now, policy: policy)
    }

    @Test func opensAtTheFailureRateOnlyAfterMinimumCalls() {
        var machine = CircuitBreakerStateMachine()
        #expect(fail(&machine) == nil)
        #expect(fail(&machine) == nil)
        #expect(fail(&machine) == nil)  // 3 of 3 failed, but fewer than 4 calls
        #expect(machine.state == .closed)
        #expect(fail(&machine) == CircuitTransition(from: .closed, to: .open))
        let refused = machine.admit(now: 10_000 * ms, policy: policy)
        #expect(!refused.allowed && refused.retryAfter == .seconds(20))
    }

    @Test func staysClosedBelowTheThresholdAndTheCountWindowSlides() {
        var machine = CircuitBreakerStateMachine()
        for _ in 0..<6 { _ = succeed(&machine) }
        for _ in 0..<4 { #expect(fail(&machine) == nil) }  // 4 of 10 = 40 %
        #expect(machine.counts.calls == 10 && machine.counts.failures == 4)
        _ = succeed(&machine)  // evicts a success: still 4 of 10
        #expect(machine.counts.failures == 4)
        #expect(fail(&machine) == CircuitTransition(from: .closed, to: .open))  // 5 of 10
    }

    @Test func slowCallsOpenTheBreaker() {
        var machine = CircuitBreakerStateMachine()
        for _ in 0..<3 { machine.record(.success(duration: .seconds(3)), probe: false, now: 0, policy: policy) }
        #expect(machine.state == .closed)
        let transition = machine.record(.success(duration: .seconds(3)), probe: false, now: 0, policy: policy)
        #expect(transition?.to == .open)
    }

    @Test func halfOpenNeedsEveryPermittedProbeToSucceed() {
        var machine = CircuitBreakerStateMachine()
        for _ in 0..<4 { _ = fail(&machine) }
        let later = 31_000 * ms
        var probes: [CircuitAdmission] = []
        for _ in 0..<3 { probes.append(machine.admit(now: later, policy: policy)) }
        #expect(probes[0].transition == CircuitTransition(from: .open, to: .halfOpen))
        #expect(probes.allSatisfy { $0.allowed && $0.probe })
        #expect(!machine.admit(now: later, policy: policy).allowed)  // a fourth caller waits
        #expect(machine.record(.success(duration: .milliseconds(1)), probe: true, now: later, policy: policy) == nil)
        #expect(machine.state == .halfOpen)  // one success is not enough (the Go original closed here)
        #expect(machine.record(.success(duration: .milliseconds(1)), probe: true, now: later, policy: policy) == nil)
        let closed = machine.record(.success(duration: .milliseconds(1)), probe: true, now: later, policy: policy)
        #expect(closed == CircuitTransition(from: .halfOpen, to: .closed))
        #expect(machine.counts.calls == 0)  // a fresh window
    }

    @Test func aFailedProbeReopensAndAnIgnoredOneFreesItsSlot() {
        var machine = CircuitBreakerStateMachine()
        for _ in 0..<4 { _ = fail(&machine) }
        let later = 31_000 * ms
        for _ in 0..<3 { _ = machine.admit(now: later, policy: policy) }
        machine.record(.ignored, probe: true, now: later, policy: policy)  // e.g. cancelled
        #expect(machine.admit(now: later, policy: policy).allowed)  // its slot went to another probe
        let reopened = machine.record(.failure(duration: .milliseconds(1)), probe: true, now: later, policy: policy)
        #expect(reopened == CircuitTransition(from: .halfOpen, to: .open))
        #expect(machine.admit(now: later, policy: policy).retryAfter == .seconds(30))
        // Late results of probes from the previous half-open round change nothing.
        #expect(machine.record(.success(duration: .zero), probe: true, now: later, policy: policy) == nil)
        #expect(machine.state == .open)
    }

    @Test func probesWhoseOutcomesNeverArriveLapse() {
        var machine = CircuitBreakerStateMachine()
        for _ in 0..<4 { _ = fail(&machine) }
        let later = 31_000 * ms
        for _ in 0..<3 { #expect(machine.admit(now: later, policy: policy).probe) }
        #expect(!machine.admit(now: later + 29_000 * ms, policy: policy).allowed)  // still waiting for them
        // One open duration later the lost probes' slots are free again.
        let retry = machine.admit(now: later + 30_000 * ms, policy: policy)
        #expect(retry.allowed && retry.probe)
        #expect(machine.halfOpenInFlight == 1)
    }

    @Test func aLateProbeOfALapsedRoundDoesNotCountInTheNext() {
        var machine = CircuitBreakerStateMachine()
        for _ in 0..<4 { _ = fail(&machine) }
        let later = 31_000 * ms
        let stale = (0..<3).map { _ in machine.admit(now: later, policy: policy) }
        #expect(stale.allSatisfy { $0.probe && $0.probeRound == later })
        // The round lapses; a new one begins with new probes.
        let fresh = machine.admit(now: later + 30_000 * ms, policy: policy)
        #expect(fresh.probe && fresh.probeRound != stale[0].probeRound)
        // The old round's probes report late: successes that must not close the breaker…
        for admission in stale {
            #expect(machine.record(.success(duration: .zero), probe: true, round: admission.probeRound, now: later + 30_001 * ms, policy: policy) == nil)
        }
        #expect(machine.state == .halfOpen && machine.halfOpenSuccesses == 0 && machine.halfOpenInFlight == 1)
        // …nor does a late failure reopen it.
        #expect(machine.record(.failure(duration: .zero), probe: true, round: stale[0].probeRound, now: later + 30_001 * ms, policy: policy) == nil)
        #expect(machine.state == .halfOpen)
        // The current round's probes decide.
        var last: CircuitTransition?
        last = machine.record(.success(duration: .zero), probe: true, round: fresh.probeRound, now: later + 30_002 * ms, policy: policy)
        for _ in 0..<2 {
            let next = machine.admit(now: later + 30_002 * ms, policy: policy)
            last = machine.record(.success(duration: .zero), probe: true, round: next.probeRound, now: later + 30_003 * ms, policy: policy)
        }
        #expect(last == CircuitTransition(from: .halfOpen, to: .closed))
    }

    @Test func timeWindowForgetsOldCalls() throws {
        let timed = try CircuitBreakerPolicy(window: .time(.seconds(10)), failureRateThreshold: 0.5, minimumCalls: 4)
        var machine = CircuitBreakerStateMachine()
        for _ in 0..<3 { machine.record(.failure(duration: .zero), probe: false, now: 0, policy: timed) }
        // 11 s later those failures have left the window.
        machine.record(.failure(duration: .zero), probe: false, now: 11_000 * ms, policy: timed)
        #expect(machine.state == .closed)
        #expect(machine.windowCounts(now: 11_000 * ms, policy: timed).calls == 1)
        for _ in 0..<3 { machine.record(.failure(duration: .zero), probe: false, now: 12_000 * ms, policy: timed) }
        #expect(machine.state == .open)
    }

    @Test func operatorControls() {
        var machine = CircuitBreakerStateMachine()
        #expect(machine.forceOpen() == CircuitTransition(from: .closed, to: .forcedOpen))
        #expect(!machine.admit(now: 1_000_000 * ms, policy: policy).allowed)  // no half-open for forced
        #expect(machine.disable() == CircuitTransition(from: .forcedOpen, to: .disabled))
        for _ in 0..<10 { _ = fail(&machine) }
        #expect(machine.state == .disabled && machine.admit(now: 0, policy: policy).allowed)
        #expect(machine.reset() == CircuitTransition(from: .disabled, to: .closed))
    }

    @Test func jsonRoundTripAndCorruptInput() throws {
        var machine = CircuitBreakerStateMachine()
        for _ in 0..<3 { _ = fail(&machine) }
        _ = succeed(&machine)
        #expect(CircuitBreakerStateMachine(json: machine.json) == machine)
        #expect(CircuitBreakerStateMachine(json: ["state": "closed"]) == nil)
        #expect(CircuitBreakerStateMachine(json: try JSONValue(parsing: #"{"state":"open","openedAt":1,"halfOpenInFlight":0,"halfOpenSuccesses":0,"ring":"19","ringNext":0,"buckets":[]}"#)) == nil)
    }

    @Test func invalidPoliciesAreRejected() {
        #expect(throws: ToolOpsError.self) { try CircuitBreakerPolicy(failureRateThreshold: 1.5) }
        #expect(throws: ToolOpsError.self) { try CircuitBreakerPolicy(failureRateThreshold: 0) }
        #expect(throws: ToolOpsError.self) { try CircuitBreakerPolicy(window: .count(0)) }
        #expect(throws: ToolOpsError.self) { try CircuitBreakerPolicy(window: .time(.zero)) }
        #expect(throws: ToolOpsError.self) { try CircuitBreakerPolicy(minimumCalls: 0) }
        #expect(throws: ToolOpsError.self) { try CircuitBreakerPolicy(openDuration: .seconds(-1)) }
    }
}

@Suite("Circuit breaker middleware", .timeLimit(.minutes(1)))
struct CircuitBreakerMiddlewareTests {
    let clock = ManualClock()
    let policy = try! CircuitBreakerPolicy(window: .count(4), minimumCalls: 2, openDuration: .seconds(5), permittedHalfOpenCalls: 1)
    let failing = ToolFunction { _ in throw Boom() }

    @Test func opensRejectsWithRetryAfterAndRecovers() async throws {
        let events = Events()
        let breaker = CircuitBreakerMiddleware(
            .init(policy: policy, observer: events.observer), store: MemoryCircuitBreakerStore(clock: clock), clock: clock)
        for _ in 0..<2 { await #expect(throws: Boom.self) { try await breaker.run(try call(), next: failing) } }
        let error = await #expect(throws: ToolOpsError.self) { try await breaker.run(try call(), next: ok) }
        #expect(error?.code == .circuitOpen && error?.retryAfter == .seconds(5))
        // Other tools have their own breaker.
        #expect(try await breaker.run(try call("t:other"), next: ok).value == "ok")
        clock.advance(by: .seconds(5))
        #expect(try await breaker.run(try call(), next: ok).value == "ok")
        #expect(events.transitions == ["closed->open", "open->half_open", "half_open->closed"])
        #expect(try await breaker.snapshot(key: "t:tool").state == .closed)
    }

    @Test func cancellationAndRefusalsAreNotFailures() async throws {
        let breaker = CircuitBreakerMiddleware(.init(policy: policy), store: MemoryCircuitBreakerStore(clock: clock), clock: clock)
        let cancelled = ToolFunction { _ in throw CancellationError() }
        let limited = ToolFunction { _ in throw ToolOpsError(.rateLimited, "slow down") }
        for _ in 0..<5 {
            await #expect(throws: CancellationError.self) { try await breaker.run(try call(), next: cancelled) }
            await #expect(throws: ToolOpsError.self) { try await breaker.run(try call(), next: limited) }
        }
        let snapshot = try await breaker.snapshot(key: "t:tool")
        #expect(snapshot.state == .closed && snapshot.counts.calls == 0)
    }

    @Test func customClassifier() async throws {
        let breaker = CircuitBreakerMiddleware(
            .init(policy: policy, isFailure: { ($0 as? Boom)?.n != 404 }), store: MemoryCircuitBreakerStore(clock: clock), clock: clock)
        let notFound = ToolFunction { _ in throw Boom(n: 404) }
        for _ in 0..<4 { await #expect(throws: Boom.self) { try await breaker.run(try call(), next: notFound) } }
        #expect(try await breaker.snapshot(key: "t:tool").state == .closed)
    }

    @Test func eventsAreDeliveredOutsideTheStoreLock() async throws {
        let store = MemoryCircuitBreakerStore(clock: clock)
        let seen = Counter()
        // The observer reads the store; were it called under the store's lock, this would deadlock.
        let breaker = CircuitBreakerMiddleware(
            .init(policy: policy, observer: { _ in
                _ = store.currentState(of: "cb:tool:t:tool")
                _ = seen.increment()
            }), store: store, clock: clock)
        for _ in 0..<2 { await #expect(throws: Boom.self) { try await breaker.run(try call(), next: failing) } }
        #expect(seen.current == 1)
        #expect(store.currentState(of: "cb:tool:t:tool") == .open)
    }

    @Test func manualControlAndShadowMode() async throws {
        let events = Events()
        let store = MemoryCircuitBreakerStore(clock: clock)
        let enforce = CircuitBreakerMiddleware(.init(policy: policy), store: store, clock: clock)
        let shadow = CircuitBreakerMiddleware(.init(policy: policy, mode: .shadow, observer: events.observer), store: store, clock: clock)
        try await enforce.control(.forceOpen, key: "t:tool")
        await #expect(throws: ToolOpsError.self) { try await enforce.run(try call(), next: ok) }
        #expect(try await shadow.run(try call(), next: ok).value == "ok")
        #expect(events.all.contains { if case .circuitRejected(_, _, _, true) = $0 { return true } else { return false } })
        try await enforce.control(.reset, key: "t:tool")
        #expect(try await enforce.run(try call(), next: ok).value == "ok")
    }
}
