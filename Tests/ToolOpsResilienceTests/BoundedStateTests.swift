import Foundation
import Synchronization
import Testing
import ToolOpsCore
@testable import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

/// Keys that callers choose (a policy per tenant) must not grow a replica's memory without
/// bound — and forgetting state must never change a decision.
@Suite("Bounded state under caller-chosen keys (memory stores)")
struct BoundedStateTests {
    let timePolicy = try! CircuitBreakerPolicy(
        window: .time(.seconds(2)), failureRateThreshold: 0.5, minimumCalls: 3, openDuration: .milliseconds(500), permittedHalfOpenCalls: 2)
    let countPolicy = try! CircuitBreakerPolicy(
        window: .count(5), failureRateThreshold: 0.5, minimumCalls: 3, openDuration: .milliseconds(500), permittedHalfOpenCalls: 2)

    /// The same random sequence of calls on two stores, one swept after every step: every
    /// admission and every transition is the same.
    @Test(arguments: [0, 1])
    func forgettingABreakerNeverChangesADecision(_ which: Int) throws {
        let policy = which == 0 ? timePolicy : countPolicy
        let clock = ManualClock()
        let swept = MemoryCircuitBreakerStore(clock: clock)
        let kept = MemoryCircuitBreakerStore(clock: clock)
        var rng = SeededRandom(seed: 42 + UInt64(which))
        var forgotten = 0
        for _ in 0..<20_000 {
            let key = "tenant-\(Int.random(in: 0..<20, using: &rng))"
            let a = swept.admitNow(key: key, policy: policy, now: nil)
            let b = kept.admitNow(key: key, policy: policy, now: nil)
            #expect(a == b, "admission of \(key)")
            if a.allowed {
                let outcome: CallOutcome = Int.random(in: 0..<3, using: &rng) == 0 ? .failure(duration: .zero) : .success(duration: .zero)
                let t1 = swept.recordNow(key: key, outcome: outcome, probe: a.probe, round: a.probeRound, policy: policy, now: nil)
                let t2 = kept.recordNow(key: key, outcome: outcome, probe: b.probe, round: b.probeRound, policy: policy, now: nil)
                #expect(t1 == t2, "transition of \(key)")
            }
            let before = swept.keyCount
            swept.sweep()
            forgotten += before - swept.keyCount
            clock.advance(by: .milliseconds(Int64.random(in: 0...400, using: &rng)))
        }
        if which == 0 { #expect(forgotten > 100, "time windows empty and are forgotten") }
    }

    @Test func aMillionTenantsOfClosedBreakersLeaveNothingBehind() throws {
        let clock = ManualClock()
        let store = MemoryCircuitBreakerStore(clock: clock)
        // Admissions of unknown breakers store nothing at all.
        for index in 0..<50_000 { _ = store.admitNow(key: "t\(index)", policy: timePolicy, now: nil) }
        #expect(store.keyCount == 0)
        // Outcomes do, until their window is empty; sweeps along the way keep it bounded.
        for index in 0..<50_000 {
            _ = store.recordNow(key: "t\(index)", outcome: .success(duration: .zero), probe: false, round: 0, policy: timePolicy, now: nil)
            if index % 10_000 == 9_999 { clock.advance(by: .seconds(3)) }
        }
        #expect(store.keyCount <= 14_096)
        clock.advance(by: .seconds(3))
        store.sweep()
        #expect(store.keyCount == 0)
    }

    /// At the ceiling, only live breakers remain: an open one is never dropped, and a new key
    /// is admitted untracked (a breaker that cannot track fails open).
    @Test func atTheCeilingOpenBreakersStayAndNewKeysAreAdmittedUntracked() throws {
        let clock = ManualClock()
        let store = MemoryCircuitBreakerStore(clock: clock, configuration: .init(maximumKeys: 3))
        for key in ["a", "b", "c"] {
            for _ in 0..<3 { _ = store.recordNow(key: key, outcome: .failure(duration: .zero), probe: false, round: 0, policy: timePolicy, now: nil) }
            #expect(store.currentState(of: key) == .open)
        }
        _ = store.recordNow(key: "d", outcome: .failure(duration: .zero), probe: false, round: 0, policy: timePolicy, now: nil)
        #expect(store.keyCount == 3)
        #expect(store.untrackedKeys == 1)
        #expect(store.admitNow(key: "d", policy: timePolicy, now: nil).allowed)
        #expect(store.admitNow(key: "a", policy: timePolicy, now: nil).allowed == false)
        // Once a breaker closed with an empty window, it makes room.
        clock.advance(by: .seconds(1))
        for _ in 0..<2 {
            let probe = store.admitNow(key: "a", policy: timePolicy, now: nil)
            _ = store.recordNow(key: "a", outcome: .success(duration: .zero), probe: probe.probe, round: probe.probeRound, policy: timePolicy, now: nil)
        }
        #expect(store.currentState(of: "a") == .closed)
        clock.advance(by: .seconds(3))
        _ = store.recordNow(key: "d", outcome: .failure(duration: .zero), probe: false, round: 0, policy: timePolicy, now: nil)
        #expect(store.currentState(of: "a") == .closed)
        #expect(store.keyCount == 3)
        #expect(store.untrackedKeys == 1)
    }

    /// With no further calls to trigger a sweep, the sweeper service still releases the state
    /// of a wave of tenants that went quiet — and stops when cancelled.
    @Test func theSweeperReleasesStateWhenNoTrafficComes() async throws {
        let clock = ManualClock()
        let breakers = MemoryCircuitBreakerStore(clock: clock)
        let limits = MemoryRateLimitStore(clock: clock)
        let limit = try RateLimit(rate: 1, per: .seconds(1))
        for index in 0..<500 {
            _ = breakers.recordNow(key: "t\(index)", outcome: .success(duration: .zero), probe: false, round: 0, policy: timePolicy, now: nil)
            _ = limits.decide(RateLimitRequest(key: "t\(index)", limit: limit), maxWait: .zero)
        }
        #expect(breakers.keyCount == 500 && limits.keyCount == 500)
        let sweeper = StoreSweeper(stores: [breakers, limits], interval: .seconds(10), clock: clock)
        let running = Task { try await sweeper.run() }
        var released = false
        for _ in 0..<200 where !released {
            clock.advance(by: .seconds(1))
            await Task.yield()
            try await Task.sleep(for: .milliseconds(2))
            released = breakers.keyCount == 0 && limits.keyCount == 0
        }
        #expect(released)
        running.cancel()
        try await running.value
    }

    @Test func forgettingAFullBucketNeverChangesADecision() throws {
        let clock = ManualClock()
        let swept = MemoryRateLimitStore(clock: clock)
        let kept = MemoryRateLimitStore(clock: clock)
        let limit = try RateLimit(rate: 5, per: .seconds(1), burst: 3)
        var rng = SeededRandom(seed: 7)
        var forgotten = 0
        for _ in 0..<20_000 {
            let request = RateLimitRequest(key: "tenant-\(Int.random(in: 0..<20, using: &rng))", limit: limit)
            let wait: Duration = Int.random(in: 0..<4, using: &rng) == 0 ? .milliseconds(300) : .zero
            #expect(swept.decide(request, maxWait: wait) == kept.decide(request, maxWait: wait))
            let before = swept.keyCount
            swept.sweep()
            forgotten += before - swept.keyCount
            clock.advance(by: .milliseconds(Int64.random(in: 0...300, using: &rng)))
        }
        #expect(forgotten > 100)
    }

    /// A limiter that cannot track a new key refuses it, saying when to try again; once a
    /// tracked bucket is full again, it makes room.
    @Test func atTheCeilingANewKeyIsRefusedUntilABucketRefills() throws {
        let clock = ManualClock()
        let store = MemoryRateLimitStore(clock: clock, configuration: .init(maximumKeys: 10))
        let limit = try RateLimit(rate: 1, per: .seconds(1), burst: 1)
        for index in 0..<10 { #expect(store.decide(RateLimitRequest(key: "k\(index)", limit: limit), maxWait: .zero).allowed) }
        let refused = store.decide(RateLimitRequest(key: "new", limit: limit), maxWait: .zero)
        #expect(refused.allowed == false)
        #expect(refused.retryAfter > .zero && refused.retryAfter <= .seconds(1))
        // A tracked key still gets its own decision.
        clock.advance(by: .seconds(1))
        #expect(store.decide(RateLimitRequest(key: "new", limit: limit), maxWait: .zero).allowed)
        #expect(store.keyCount <= 10)
    }

    @Test func atTheCeilingABulkheadForANewKeyIsRefusedUntilOneIsIdle() async throws {
        let store = MemoryBulkheadStore(configuration: .init(maximumKeys: 3))
        var permits: [BulkheadPermit] = []
        for key in ["a", "b", "c"] { permits.append(try await store.acquire(key: key, limit: 1, lease: .seconds(1), maxWait: .zero)) }
        let error = await #expect(throws: ToolOpsError.self) { try await store.acquire(key: "d", limit: 1, lease: .seconds(1), maxWait: .zero) }
        #expect(error?.code == .bulkheadFull)
        #expect(store.acquireNow(key: "d", limit: 1) == nil)
        await store.release(permits[0])
        _ = try await store.acquire(key: "d", limit: 1, lease: .seconds(1), maxWait: .zero)
        #expect(store.keyCount == 3)
    }
}

@Suite("Bounded state under caller-chosen keys (file stores)", .timeLimit(.minutes(1)))
struct FileBoundedStateTests {
    @Test func idleStateFilesAndTheirLocksAreRemoved() async throws {
        let clock = ManualClock()
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let limits = try FileRateLimitStore(directory: path + "/rl", clock: clock)
        let bulkheads = try FileBulkheadStore(directory: path + "/bh", clock: clock)
        let breakers = try FileCircuitBreakerStore(directory: path + "/cb", clock: clock)
        let policy = try CircuitBreakerPolicy(window: .time(.seconds(2)), minimumCalls: 3)
        let limit = try RateLimit(rate: 10, per: .seconds(1), burst: 10)
        for index in 0..<300 {
            let key = "tenant-\(index)"
            _ = try await limits.acquire([RateLimitRequest(key: key, limit: limit)], maxWait: .zero)
            await bulkheads.release(try await bulkheads.acquire(key: key, limit: 2, lease: .seconds(60), maxWait: .zero))
            _ = try await breakers.record(key: key, outcome: .success(duration: .zero), probe: false, policy: policy)
        }
        // A held slot and a partly drained bucket are live: they stay through every sweep.
        let held = try await bulkheads.acquire(key: "busy", limit: 2, lease: .seconds(60), maxWait: .zero)
        _ = try await limits.acquire([RateLimitRequest(key: "drained", limit: try RateLimit(rate: 1, per: .seconds(3600)))], maxWait: .zero)
        clock.advance(by: .seconds(3))
        limits.sweep()
        bulkheads.sweep()
        breakers.sweep()
        #expect(limits.files.fileCount == 2)  // "drained": its state and its lock
        #expect(bulkheads.files.fileCount == 2)  // "busy"
        #expect(breakers.files.fileCount == 0)
        #expect(try await limits.acquire([RateLimitRequest(key: "drained", limit: try RateLimit(rate: 1, per: .seconds(3600)))], maxWait: .zero)[0].allowed == false)
        await bulkheads.release(held)
    }

    @Test func forgettingABreakerFileNeverChangesADecision() async throws {
        let clock = ManualClock()
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let swept = try FileCircuitBreakerStore(directory: path + "/a", clock: clock)
        let kept = try FileCircuitBreakerStore(directory: path + "/b", clock: clock)
        let policy = try CircuitBreakerPolicy(
            window: .time(.seconds(2)), failureRateThreshold: 0.5, minimumCalls: 3, openDuration: .milliseconds(500), permittedHalfOpenCalls: 2)
        var rng = SeededRandom(seed: 9)
        var forgotten = 0
        for _ in 0..<1_500 {
            let key = "tenant-\(Int.random(in: 0..<8, using: &rng))"
            let a = try await swept.admit(key: key, policy: policy)
            let b = try await kept.admit(key: key, policy: policy)
            #expect(a == b)
            if a.allowed {
                let outcome: CallOutcome = Int.random(in: 0..<3, using: &rng) == 0 ? .failure(duration: .zero) : .success(duration: .zero)
                let t1 = try await swept.record(key: key, outcome: outcome, probe: a.probe, round: a.probeRound, policy: policy)
                let t2 = try await kept.record(key: key, outcome: outcome, probe: b.probe, round: b.probeRound, policy: policy)
                #expect(t1 == t2)
            }
            forgotten += swept.sweep()
            clock.advance(by: .milliseconds(Int64.random(in: 0...400, using: &rng)))
        }
        #expect(forgotten > 20)
    }

    /// At the ceiling each file store fails the way its policy should: the limiter refuses a
    /// new key, the breaker admits it untracked (no file), the bulkhead refuses it.
    @Test func atTheCeilingEachFileStoreFailsItsOwnWay() async throws {
        let clock = ManualClock()
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ceiling = FileStateDirectory.Configuration(maximumKeys: 2)
        let limits = try FileRateLimitStore(directory: path + "/rl", clock: clock, configuration: ceiling)
        let breakers = try FileCircuitBreakerStore(directory: path + "/cb", clock: clock, configuration: ceiling)
        let bulkheads = try FileBulkheadStore(directory: path + "/bh", clock: clock, configuration: ceiling)
        let slow = try RateLimit(rate: 1, per: .seconds(3600))
        let policy = try CircuitBreakerPolicy(window: .time(.seconds(2)), minimumCalls: 1)
        var permits: [BulkheadPermit] = []
        for key in ["a", "b"] {
            #expect(try await limits.acquire([RateLimitRequest(key: key, limit: slow)], maxWait: .zero)[0].allowed)
            _ = try await breakers.record(key: key, outcome: .failure(duration: .zero), probe: false, policy: policy)
            permits.append(try await bulkheads.acquire(key: key, limit: 1, lease: .seconds(60), maxWait: .zero))
        }
        let refused = try await limits.acquire([RateLimitRequest(key: "c", limit: slow)], maxWait: .zero)[0]
        #expect(!refused.allowed && refused.retryAfter > .zero)
        #expect(try await breakers.admit(key: "c", policy: policy).allowed)
        _ = try await breakers.record(key: "c", outcome: .failure(duration: .zero), probe: false, policy: policy)
        #expect(try await breakers.admit(key: "c", policy: policy).allowed)  // untracked: still admitted
        #expect(try await breakers.admit(key: "a", policy: policy).allowed == false)  // tracked and open
        let error = await #expect(throws: ToolOpsError.self) { try await bulkheads.acquire(key: "c", limit: 1, lease: .seconds(60), maxWait: .zero) }
        #expect(error?.code == .bulkheadFull)
        // Room comes back when state goes idle (the ceiling's sweep runs at most once a second).
        await bulkheads.release(permits[0])
        try await Task.sleep(for: .milliseconds(1_100))
        _ = try await bulkheads.acquire(key: "c", limit: 1, lease: .seconds(60), maxWait: .zero)
    }

    /// A sweep unlinks a key's lock file while it holds it; a process that was waiting on that
    /// file must not take it for the key's lock while another holds the new one.
    @Test func aSweepNeverLetsTwoWritersIntoOneKey() throws {
        let path = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let directory = try FileStateDirectory(path: path)
        let inside = Mutex([String: Int]())
        let overlaps = Counter()
        let done = Flag()
        let threads = 4
        let finished = Counter()
        for _ in 0..<threads {
            Thread.detachNewThread {
                for round in 0..<400 {
                    let key = "k\(round % 3)"
                    try? directory.update([key]) { states in
                        if inside.withLock({ $0[key, default: 0] += 1; return $0[key]! }) > 1 { overlaps.increment() }
                        usleep(50)
                        inside.withLock { $0[key, default: 1] -= 1 }
                        states[0] = nil  // idle: the sweep may remove its lock file at any moment
                    }
                }
                finished.increment()
            }
        }
        Thread.detachNewThread {
            while !done.isSet { directory.sweep { _ in true } }
        }
        while finished.current < threads { usleep(1000) }
        done.set()
        #expect(overlaps.current == 0)
    }
}
