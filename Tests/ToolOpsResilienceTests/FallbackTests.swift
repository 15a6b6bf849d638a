import Metrics
import MetricsTestKit
import Synchronization
import Testing
import ToolOpsCore
import ToolOpsTesting
@testable import ToolOpsResilience

/// A shared store whose availability the test switches.
final class FlakyRateLimitStore: RateLimitStore {
    let down = Mutex(false)
    let saidNo = Mutex(false)
    let calls = Mutex(0)
    let inner = MemoryRateLimitStore()
    func acquire(_ requests: [RateLimitRequest], maxWait: Duration) async throws -> [RateLimitDecision] {
        calls.withLock { $0 += 1 }
        if down.withLock({ $0 }) { throw ToolOpsError(.storeUnavailable, "down") }
        if saidNo.withLock({ $0 }) { throw Boom(n: 7) }
        return try await inner.acquire(requests, maxWait: maxWait)
    }
}

/// swift-metrics can be bootstrapped once per process; only this suite does it.
let testMetrics: TestMetrics = {
    let metrics = TestMetrics()
    MetricsSystem.bootstrap(metrics)
    return metrics
}()

@Suite("Fallback stores", .timeLimit(.minutes(1)))
struct FallbackTests {
    @Test func degradesOnOutagesOnlyReportsAndRecovers() async throws {
        let metrics = testMetrics
        let clock = ManualClock()
        let primary = FlakyRateLimitStore()
        let events = Events()
        let store = try FallbackRateLimitStore(
            primary: primary, mode: .failClosed, deadline: .seconds(1), probeInterval: .seconds(5), clock: clock,
            name: "fallback-test", observer: events.observer)
        let gauge = try metrics.expectGauge("toolops_store_degraded", [("store", "fallback-test")])
        let request = RateLimitRequest(key: "k", limit: try RateLimit(rate: 100))
        #expect(try await store.acquire([request], maxWait: .zero)[0].allowed)
        #expect(gauge.lastValue == 0)

        // "Said no" is rethrown and is not an outage.
        primary.saidNo.withLock { $0 = true }
        await #expect(throws: Boom.self) { try await store.acquire([request], maxWait: .zero) }
        #expect(!store.isDegraded)
        primary.saidNo.withLock { $0 = false }

        primary.down.withLock { $0 = true }
        let refused = try await store.acquire([request], maxWait: .zero)[0]
        #expect(!refused.allowed && refused.retryAfter == .seconds(5))  // fail closed
        #expect(store.isDegraded && gauge.lastValue == 1)
        // Until the probe interval passes, the shared store is not asked again.
        let callsWhileDegraded = primary.calls.withLock { $0 }
        for _ in 0..<10 { _ = try await store.acquire([request], maxWait: .zero) }
        #expect(primary.calls.withLock { $0 } == callsWhileDegraded)

        primary.down.withLock { $0 = false }
        clock.advance(by: .seconds(5))
        #expect(try await store.acquire([request], maxWait: .zero)[0].allowed)
        #expect(!store.isDegraded && gauge.lastValue == 0)
        let kinds = events.all.map { event -> String in
            switch event {
            case .storeDegraded: return "degraded"
            case .storeRecovered: return "recovered"
            default: return "other"
            }
        }
        #expect(kinds == ["degraded", "recovered"])
    }

    @Test func invalidFallbackConfigurations() {
        #expect(throws: ToolOpsError.self) { try FallbackRateLimitStore(primary: MemoryRateLimitStore(), mode: .local(scale: 0)) }
        #expect(throws: ToolOpsError.self) { try FallbackRateLimitStore(primary: MemoryRateLimitStore(), deadline: .zero) }
        #expect(throws: ToolOpsError.self) { try FallbackBulkheadStore(primary: MemoryBulkheadStore(), probeInterval: .zero) }
    }
}
