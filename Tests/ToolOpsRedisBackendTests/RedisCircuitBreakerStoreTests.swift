import Synchronization
import Testing
import ToolOpsCore
import ToolOpsRedis
@testable import ToolOpsRedisBackend
import ToolOpsResilience
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Redis circuit-breaker store", .timeLimit(.minutes(1)))
struct RedisCircuitBreakerStoreTests {
    let policy = try! CircuitBreakerPolicy(
        window: .time(.seconds(10)), failureRateThreshold: 0.5, minimumCalls: 4, openDuration: .milliseconds(500), permittedHalfOpenCalls: 2)

    func replicas(
        _ url: String, count: Int = 3, quorum: Int = 1, observer: ResilienceObserver? = nil
    ) async throws -> [(RedisClient, RedisCircuitBreakerStore)] {
        var result: [(RedisClient, RedisCircuitBreakerStore)] = []
        for index in 0..<count {
            let client = try RedisClient(url: url, logger: quietLogger)
            let store = RedisCircuitBreakerStore(
                client: client, configuration: .init(flushInterval: .milliseconds(5), quorum: quorum, replicaID: "r\(index)"),
                observer: observer)
            try await store.start()
            result.append((client, store))
        }
        return result
    }

    func fail(_ store: RedisCircuitBreakerStore, _ times: Int, key: String = "svc") async throws {
        for _ in 0..<times { _ = try await store.record(key: key, outcome: .failure(duration: .milliseconds(1)), probe: false, policy: policy) }
        await store.flush()
    }

    @Test func aBreakerOpenedOnOneReplicaRejectsOnTheOthersWithoutRoundTrips() async throws {
        try await withRedisServer { server in
            // When each replica's local view learns that the breaker opened.
            let openedAt = OpenTimes()
            let all = try await replicas(server.url, observer: { event in
                if case .circuitStateChanged(_, _, .open) = event { openedAt.record() }
            })
            defer { all.forEach { $0.0.shutdown() } }
            let (a, b, c) = (all[0].1, all[1].1, all[2].1)
            for store in [a, b, c] { #expect(try await store.admit(key: "svc", policy: policy).allowed) }

            // Closed admissions cost no round trip.
            let evalsBefore = try await evalshaCalls(all[0].0)
            for _ in 0..<1000 { #expect(try await b.admit(key: "svc", policy: policy).allowed) }
            #expect(try await evalshaCalls(all[0].0) == evalsBefore)

            let flushed = ContinuousClock.now
            try await fail(a, 4)
            let opened = ContinuousClock.now
            var rejectedOnBoth = false
            while !rejectedOnBoth && ContinuousClock.now - opened < .seconds(2) {
                let onB = try await b.admit(key: "svc", policy: policy)
                let onC = try await c.admit(key: "svc", policy: policy)
                rejectedOnBoth = !onB.allowed && !onC.allowed
                if !rejectedOnBoth { try await Task.sleep(for: .milliseconds(2)) }
            }
            #expect(rejectedOnBoth)
            // Open, and refusing locally: no round trip either (the open duration is 500 ms).
            let evalsWhileOpen = try await evalshaCalls(all[0].0)
            for _ in 0..<500 {
                #expect(try await b.admit(key: "svc", policy: policy).allowed == false)
                #expect(try await c.admit(key: "svc", policy: policy).allowed == false)
            }
            #expect(try await evalshaCalls(all[0].0) == evalsWhileOpen)
            // All three views knew: A from its flush reply, B and C from the channel alone (their
            // closed views never ask Redis, as counted above). Serially this takes a few ms;
            // the bound leaves room for the whole suite running in parallel on 2 cores.
            let times = openedAt.all
            #expect(times.count == 3)
            if let last = times.max() { #expect(last - flushed < .seconds(1), "views updated \(last - flushed) after the flush began") }
            _ = opened
            let refused = try await c.admit(key: "svc", policy: policy)
            #expect(refused.retryAfter > .zero && refused.retryAfter <= .milliseconds(500))
            #expect(try await a.snapshot(key: "svc", policy: policy).state == .open)
        }
    }

    @Test func halfOpenAdmitsAtMostNProbesClusterWideThenCloses() async throws {
        try await withRedisServer { server in
            let all = try await replicas(server.url)
            defer { all.forEach { $0.0.shutdown() } }
            let stores = all.map(\.1)
            try await fail(stores[0], 4)
            try await Task.sleep(for: .milliseconds(600))  // the open duration (Redis time) passes
            let admissions = try await withThrowingTaskGroup(of: CircuitAdmission.self) { group in
                for index in 0..<30 { group.addTask { try await stores[index % 3].admit(key: "svc", policy: policy) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let probes = admissions.filter(\.probe)
            #expect(probes.count == 2, "at most permittedHalfOpenCalls probes across all replicas")
            #expect(admissions.filter(\.allowed).count == 2)
            // Both probes succeed (reported by two different replicas): closed everywhere.
            _ = try await stores[1].record(key: "svc", outcome: .success(duration: .milliseconds(1)), probe: true, policy: policy)
            await stores[1].flush()
            #expect(try await stores[0].snapshot(key: "svc", policy: policy).state == .halfOpen)
            _ = try await stores[2].record(key: "svc", outcome: .success(duration: .milliseconds(1)), probe: true, policy: policy)
            await stores[2].flush()
            #expect(try await stores[0].snapshot(key: "svc", policy: policy).state == .closed)
            var allowedEverywhere = false
            for _ in 0..<100 where !allowedEverywhere {
                var allowed = true
                for store in stores where !(try await store.admit(key: "svc", policy: policy).allowed) { allowed = false }
                allowedEverywhere = allowed
                if !allowedEverywhere { try await Task.sleep(for: .milliseconds(5)) }
            }
            #expect(allowedEverywhere)
        }
    }

    @Test func probesOfAStalledReplicaLapseAndTheirLateOutcomesCountInNoRound() async throws {
        try await withRedisServer { server in
            let all = try await replicas(server.url, count: 2)
            defer { all.forEach { $0.0.shutdown() } }
            let (a, b) = (all[0].1, all[1].1)
            try await fail(a, 4)
            try await Task.sleep(for: .milliseconds(600))
            // A takes both probes and stalls; B must wait for them…
            let stale = [try await a.admit(key: "svc", policy: policy), try await a.admit(key: "svc", policy: policy)]
            #expect(stale.allSatisfy { $0.probe && $0.probeRound > 0 })
            #expect(try await b.admit(key: "svc", policy: policy).allowed == false)
            // …until one open duration later their slots lapse and B's round begins.
            try await Task.sleep(for: .milliseconds(600))
            let fresh = try await b.admit(key: "svc", policy: policy)
            #expect(fresh.probe && fresh.probeRound > stale[0].probeRound, "the lost probes' slots lapsed")
            // A's late successes would close the breaker if they counted (2 are permitted).
            for admission in stale {
                _ = try await a.record(key: "svc", outcome: .success(duration: .milliseconds(1)), probe: true, round: admission.probeRound, policy: policy)
            }
            await a.flush()
            var snapshot = try await a.snapshot(key: "svc", policy: policy)
            #expect(snapshot.state == .halfOpen)
            #expect(snapshot.halfOpenInFlight == 1)  // B's probe is still out
            // B's own probes decide.
            _ = try await b.record(key: "svc", outcome: .success(duration: .milliseconds(1)), probe: true, round: fresh.probeRound, policy: policy)
            let second = try await b.admit(key: "svc", policy: policy)
            #expect(second.probe)
            _ = try await b.record(key: "svc", outcome: .success(duration: .milliseconds(1)), probe: true, round: second.probeRound, policy: policy)
            await b.flush()
            snapshot = try await b.snapshot(key: "svc", policy: policy)
            #expect(snapshot.state == .closed)
        }
    }

    @Test func quorumNeedsFailuresFromSeveralReplicas() async throws {
        try await withRedisServer { server in
            let all = try await replicas(server.url, count: 2, quorum: 2)
            defer { all.forEach { $0.0.shutdown() } }
            let (a, b) = (all[0].1, all[1].1)
            try await fail(a, 10)
            #expect(try await a.snapshot(key: "svc", policy: policy).state == .closed, "one replica's failures are not enough")
            try await fail(b, 1)
            #expect(try await a.snapshot(key: "svc", policy: policy).state == .open)
        }
    }

    @Test func manualControlIsClusterWide() async throws {
        try await withRedisServer { server in
            let all = try await replicas(server.url, count: 2)
            defer { all.forEach { $0.0.shutdown() } }
            let (a, b) = (all[0].1, all[1].1)
            #expect(try await b.admit(key: "svc", policy: policy).allowed)
            #expect(try await a.control(key: "svc", .forceOpen, policy: policy) == CircuitTransition(from: .closed, to: .forcedOpen))
            var refused = false
            for _ in 0..<100 where !refused {
                refused = !(try await b.admit(key: "svc", policy: policy).allowed)
                if !refused { try await Task.sleep(for: .milliseconds(2)) }
            }
            #expect(refused)
            // Operator states do not expire with the breaker's idle TTL.
            _ = try await fail(a, 1)
            #expect(try await all[0].0.send("PTTL", "toolops:cb:{svc}") == .integer(-1))
            _ = try await a.control(key: "svc", .reset, policy: policy)
            var allowed = false
            for _ in 0..<100 where !allowed {
                allowed = try await b.admit(key: "svc", policy: policy).allowed
                if !allowed { try await Task.sleep(for: .milliseconds(2)) }
            }
            #expect(allowed)
        }
    }

    @Test func namesWithSeparatorsPropagate() async throws {
        try await withRedisServer { server in
            let all = try await replicas(server.url, count: 2)
            defer { all.forEach { $0.0.shutdown() } }
            let (a, b) = (all[0].1, all[1].1)
            let key = "tenant|acme:tool|x"
            #expect(try await b.admit(key: key, policy: policy).allowed)
            _ = try await a.control(key: key, .forceOpen, policy: policy)
            var refusedLocally = false
            for _ in 0..<200 where !refusedLocally {
                refusedLocally = b.admitLocally(key: key, policy: policy) == nil  // the view left "closed"
                if !refusedLocally { try await Task.sleep(for: .milliseconds(2)) }
            }
            #expect(refusedLocally)
            #expect(try await b.admit(key: key, policy: policy).allowed == false)
        }
    }

    @Test func transitionMessagesParseWithAndWithoutVersions() {
        let parsed = RedisCircuitBreakerStore.parseTransition("tenant|acme:tool|x|open|2500|1764089212123000")
        #expect(parsed?.name == "tenant|acme:tool|x")
        #expect(parsed?.state == .open)
        #expect(parsed?.retryAfterMs == 2500)
        #expect(parsed?.version == 1_764_089_212_123_000)
        // The version-less form of earlier releases (a rolling upgrade).
        let legacy = RedisCircuitBreakerStore.parseTransition("a|b|half_open|0")
        #expect(legacy?.name == "a|b")
        #expect(legacy?.state == .halfOpen)
        #expect(legacy?.version == nil)
        #expect(RedisCircuitBreakerStore.parseTransition("svc|closed|0")?.name == "svc")
        #expect(RedisCircuitBreakerStore.parseTransition("svc|closed|0|12")?.version == 12)
        for garbage in ["", "svc", "svc|nonsense|0", "svc|open|x", "|||"] {
            #expect(RedisCircuitBreakerStore.parseTransition(garbage) == nil, "\(garbage)")
        }
    }

    @Test func anOvertakenReplyDoesNotBringAnOldStateBack() async throws {
        try await withRedisServer { server in
            let all = try await replicas(server.url, count: 2)
            defer { all.forEach { $0.0.shutdown() } }
            let (a, b) = (all[0].1, all[1].1)
            // Versions grow with every transition, in the hash and in the replies.
            _ = try await a.control(key: "svc", .forceOpen, policy: policy)
            let opened = try #require(try await all[0].0.send("HGET", "toolops:cb:{svc}", "ver").int)
            _ = try await a.control(key: "svc", .reset, policy: policy)
            let reset = try #require(try await all[0].0.send("HGET", "toolops:cb:{svc}", "ver").int)
            #expect(reset > opened)
            // B learns the reset (newest). A late answer from before it — "forced open", with
            // the older version — must not win, or B would refuse calls the cluster allows.
            var current = false
            for _ in 0..<200 where !current {
                current = b.viewState("svc") == .closed && b.admitLocally(key: "svc", policy: policy) != nil
                if !current { try await Task.sleep(for: .milliseconds(2)) }
            }
            #expect(current)
            b.apply(name: "svc", state: .forcedOpen, retryAfterMs: 30_000, version: opened)
            #expect(b.viewState("svc") == .closed)
            #expect(try await b.admit(key: "svc", policy: policy).allowed)
            // A newer transition still gets through, and so does a version-less one (old replica).
            b.apply(name: "svc", state: .open, retryAfterMs: 30_000, version: reset + 1)
            #expect(b.viewState("svc") == .open)
            b.apply(name: "svc", state: .closed, retryAfterMs: 0, version: nil)
            #expect(b.viewState("svc") == .closed)
        }
    }

    /// Breakers keyed per tenant: a transition announced for each of thousands of names must
    /// not grow every replica's views without bound. A forgotten view only costs a round trip.
    @Test func viewsStayBoundedUnderManyBreakerNames() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let store = RedisCircuitBreakerStore(client: client, configuration: .init(maximumViews: 100))
            try await store.start()
            for index in 0..<1_000 {
                store.apply(name: "tenant-\(index)", state: .closed, retryAfterMs: 0, version: Int64(index + 1))
            }
            #expect(store.viewCount == 100)
            // Forgotten or not, every breaker's admission is still right: it asks Redis.
            _ = try await store.control(key: "tenant-0", .forceOpen, policy: policy)
            #expect(try await store.admit(key: "tenant-0", policy: policy).allowed == false)
            #expect(try await store.admit(key: "tenant-999", policy: policy).allowed)
            #expect(store.viewCount <= 100)
        }
    }

    /// A probe admission granted after the fallback's deadline gave up on it (Redis answered
    /// late) is given back at once, not held until its half-open round lapses — which would
    /// leave the cluster without probes for a whole open duration.
    @Test func aProbeGrantedAfterTheFallbackDeadlineIsGivenBack() async throws {
        try await withRedisServer { server in
            let redis = try RedisClient(url: server.url, logger: quietLogger)
            let stall = try RedisClient(url: server.url, logger: quietLogger)
            defer { redis.shutdown(); stall.shutdown() }
            let policy = try CircuitBreakerPolicy(
                window: .time(.seconds(10)), failureRateThreshold: 0.5, minimumCalls: 4, openDuration: .seconds(30), permittedHalfOpenCalls: 1)
            let store = try FallbackCircuitBreakerStore(
                primary: RedisCircuitBreakerStore(client: redis), deadline: .milliseconds(100), probeInterval: .seconds(30))
            _ = try await store.admit(key: "probe", policy: policy)  // scripts loaded
            // Half-open, in a round that lasts the open duration (30 s).
            let now = try #require(try await stall.send("TIME").array?.first?.int)
            _ = try await stall.send("HSET", "toolops:cb:{probe}", "state", "half_open", "halfOpenAt", now * 1000, "inflight", 0)
            #expect(try await stall.send("CLIENT", "PAUSE", "1000", "ALL") == .simpleString("OK"))
            _ = try await store.admit(key: "probe", policy: policy)
            #expect(store.isDegraded)  // decided locally
            // The script granted the probe once Redis woke; the slot must come back.
            var inflight: Int64 = -1
            for _ in 0..<300 {
                inflight = try await stall.send("HGET", "toolops:cb:{probe}", "inflight").int ?? -1
                if inflight == 0, try await stall.send("HGET", "toolops:cb:{probe}", "successes").int == 0 { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(inflight == 0)
            // So the next caller gets the cluster's one probe.
            let primary = RedisCircuitBreakerStore(client: stall)
            #expect(try await primary.admit(key: "probe", policy: policy).probe)
        }
    }

    @Test func countWindowsAreRefusedClearly() async throws {
        try await withRedisServer { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            let store = RedisCircuitBreakerStore(client: client)
            let error = await #expect(throws: ToolOpsError.self) { try await store.admit(key: "x", policy: try CircuitBreakerPolicy()) }
            #expect(error?.code == .invalidConfiguration)
        }
    }

    func evalshaCalls(_ client: RedisClient) async throws -> Int {
        try await client.commandCalls()["evalsha"] ?? 0
    }
}

@Suite("Circuit breaker with Redis down", .timeLimit(.minutes(1)))
struct RedisCircuitBreakerFallbackTests {
    @Test func localBreakerTakesOverAndRedisTakesBackAfterRestart() async throws {
        let policy = try CircuitBreakerPolicy(window: .time(.seconds(10)), minimumCalls: 2, openDuration: .seconds(30))
        try await withRedisServer { server in
            var configuration = try RedisConfiguration(url: server.url)
            configuration.reconnect = ReconnectBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
            let client = try RedisClient(configuration: configuration, logger: quietLogger)
            defer { client.shutdown() }
            let redisStore = RedisCircuitBreakerStore(client: client, configuration: .init(flushInterval: .milliseconds(5)))
            try await redisStore.start()
            let events = EventLog()
            let store = try FallbackCircuitBreakerStore(
                primary: redisStore, deadline: .seconds(1), probeInterval: .milliseconds(50), observer: events.observer)
            let breaker = CircuitBreakerMiddleware(.init(policy: policy), store: store)
            let failing = ToolFunction { _ in throw TestFailure("boom") }
            let ok = ToolFunction { _ in ToolResult("ok") }
            #expect(try await breaker.run(try ToolCall(tool: ToolID("t:x")), next: ok).value == "ok")

            server.kill()
            // The pub/sub connection is gone, so admissions ask Redis, fail, and use the local breaker.
            var degraded = false
            for _ in 0..<200 where !degraded {
                _ = try? await breaker.run(try ToolCall(tool: ToolID("t:x")), next: ok)
                degraded = store.isDegraded
                if !degraded { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(degraded)
            for _ in 0..<2 { _ = try? await breaker.run(try ToolCall(tool: ToolID("t:x")), next: failing) }
            let error = await #expect(throws: ToolOpsError.self) { try await breaker.run(try ToolCall(tool: ToolID("t:x")), next: ok) }
            #expect(error?.code == .circuitOpen, "the local breaker opened")

            try server.start()
            var recovered = false
            for _ in 0..<300 where !recovered {
                try await Task.sleep(for: .milliseconds(20))
                _ = try? await breaker.run(try ToolCall(tool: ToolID("t:y")), next: ok)
                recovered = !store.isDegraded
            }
            #expect(recovered)
            #expect(events.names.first == "degraded" && events.names.contains("recovered"))
        }
    }
}

final class OpenTimes: Sendable {
    private let times = Mutex<[ContinuousClock.Instant]>([])
    func record() { times.withLock { $0.append(.now) } }
    var all: [ContinuousClock.Instant] { times.withLock { $0 } }
}
