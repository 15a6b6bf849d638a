import Logging
import ServiceLifecycle
import Synchronization
import Testing
import ToolOpsCore
import ToolOpsHealth

#if canImport(Glibc)
import Glibc
import ToolOpsTestSupport
import ToolOpsTesting
#endif

@Suite("Membership", .timeLimit(.minutes(1)))
struct MembershipTests {
    @Test func replicaRecordsRoundTripAndRejectGarbage() throws {
        var original = try replica("api-7f9c", port: 9000)
        original.health = .degraded
        original.checks = ["redis": .degraded]
        let decoded = try ReplicaInfo(decoding: original.encoded())
        #expect(decoded == original)

        for bad in ["", "{}", "[1]", #"{"id":"x"}"#, "not json", String(repeating: "[", count: 100)] {
            #expect(throws: ToolOpsError.self) { try ReplicaInfo(decoding: Array(bad.utf8)) }
        }
        var json = original.json
        if case .object(var object) = json {
            object["health"] = "sick"
            json = .object(object)
        }
        #expect(throws: ToolOpsError.self) { try ReplicaInfo(json: json) }
        for id in ["", ".hidden", "a/b", "a b", String(repeating: "x", count: 129)] {
            #expect(throws: ToolOpsError.self) { try ReplicaInfo(id: id, host: "h", port: 1, version: "v") }
        }
        #expect(throws: ToolOpsError.self) { try ReplicaInfo(id: "ok", host: "h", port: 70_000, version: "v") }
    }

    @Test func memoryRegistrationsExpireAfterTheirTTL() async throws {
        let clock = ManualClock()
        let store = MemoryMembershipStore(clock: clock)
        try await store.register(try replica("b"), ttl: .seconds(10))
        try await store.register(try replica("a"), ttl: .seconds(3))
        #expect(try await store.members().map(\.id) == ["a", "b"])
        clock.advance(by: .seconds(3))
        #expect(try await store.members().map(\.id) == ["b"])
        try await store.register(try replica("b"), ttl: .seconds(10))  // a heartbeat extends
        clock.advance(by: .seconds(9))
        #expect(try await store.members().map(\.id) == ["b"])
        try await store.deregister(id: "b")
        try await store.deregister(id: "never-registered")
        #expect(try await store.members().isEmpty)
    }

    @Test func fileRegistryIsSharedAndSurvivesCorruptFiles() async throws {
        let directory = temporaryDirectory("members")
        defer { _ = system("rm -rf '\(directory)'") }
        let wall = ManualClock(now: ClockInstant(nanoseconds: 1_700_000_000_000_000_000))
        let one = try FileMembershipStore(directory: directory, clock: wall)
        let two = try FileMembershipStore(directory: directory, clock: wall)
        var a = try replica("a")
        try await one.register(a, ttl: .seconds(5))
        try await two.register(try replica("b"), ttl: .seconds(20))
        #expect(try await two.members().map(\.id) == ["a", "b"])
        a.health = .unhealthy
        try await one.register(a, ttl: .seconds(5))
        #expect(try await two.members().first?.health == .unhealthy)

        // Truncated, garbage and misnamed files are ignored and removed; nothing crashes.
        let bytes = try #require(readFile("\(directory)/a.replica"))
        writeFile("\(directory)/c.replica", Array(bytes.prefix(bytes.count / 2)))
        writeFile("\(directory)/d.replica", Array("\u{0}\u{1}garbage".utf8))
        writeFile("\(directory)/e.replica", bytes)  // a's record under another name
        #expect(try await one.members().map(\.id) == ["a", "b"])
        #expect(readFile("\(directory)/c.replica") == nil)
        #expect(readFile("\(directory)/d.replica") == nil)
        #expect(readFile("\(directory)/e.replica") == nil)

        wall.advance(by: .seconds(5))
        #expect(try await one.members().map(\.id) == ["b"])
        #expect(readFile("\(directory)/a.replica") == nil)  // expired files are cleaned up
        try await one.deregister(id: "b")
        #expect(try await two.members().isEmpty)
        await #expect(throws: ToolOpsError.self) { try await one.deregister(id: "../etc") }
    }

    @Test func heartbeatRegistersRefreshesAndDeregistersOnShutdown() async throws {
        let clock = ManualClock()
        let store = MemoryMembershipStore(clock: clock)
        let health = try HealthMonitor()
        let dependency = SwitchCheck(.healthy())
        try health.register("dep", dependency)
        let heartbeat = try MembershipHeartbeat(
            replica: try replica("self"), store: store, configuration: .init(interval: .seconds(5), ttl: .seconds(15)),
            health: health, clock: clock, logger: quietLogger)
        let group = ServiceGroup(configuration: .init(services: [heartbeat], logger: quietLogger))
        async let run: Void = group.run()

        #expect(await eventually { (try? await store.members().map(\.id)) == ["self"] })
        #expect(await eventually { clock.sleeperCount == 1 })
        dependency.set(.degraded("slow"))
        clock.advance(by: .seconds(5))
        #expect(await eventually { (try? await store.members().first?.health) == .degraded })
        #expect(try await store.members().first?.checks == ["dep": .degraded])
        // It keeps the registration alive past the TTL of any single beat.
        for _ in 0..<4 {
            #expect(await eventually { clock.sleeperCount == 1 })
            clock.advance(by: .seconds(5))
        }
        #expect(try await store.members().map(\.id) == ["self"])

        await group.triggerGracefulShutdown()
        try await run
        #expect(try await store.members().isEmpty)  // at once, not after the TTL
    }

    @Test func failedHeartbeatsAreRetriedSoon() async throws {
        /// A store that is down until the test says otherwise.
        final class FlakyStore: MembershipStore {
            let inner = MemoryMembershipStore()
            let down = Mutex(true)
            let attempts = Counter()
            func register(_ replica: ReplicaInfo, ttl: Duration) async throws {
                attempts.increment()
                if down.withLock({ $0 }) { throw ToolOpsError(.storeUnavailable, "down") }
                try await inner.register(replica, ttl: ttl)
            }
            func deregister(id: String) async throws { try await inner.deregister(id: id) }
            func members() async throws -> [ReplicaInfo] { try await inner.members() }
        }
        let clock = ManualClock()
        let store = FlakyStore()
        let heartbeat = try MembershipHeartbeat(
            replica: try replica("self"), store: store,
            configuration: .init(interval: .seconds(5), ttl: .seconds(15), retryInterval: .milliseconds(500)), clock: clock,
            logger: quietLogger)
        let group = ServiceGroup(configuration: .init(services: [heartbeat], logger: quietLogger))
        async let run: Void = group.run()
        #expect(await eventually { clock.sleeperCount == 1 })
        #expect(store.attempts.current == 1)
        store.down.withLock { $0 = false }
        clock.advance(by: .milliseconds(500))  // the retry, not the next full interval
        #expect(await eventually { (try? await store.members().count) == 1 })
        await group.triggerGracefulShutdown()
        try await run
    }

    @Test func heartbeatConfigurationIsValidated() throws {
        let store = MemoryMembershipStore()
        #expect(throws: ToolOpsError.self) {
            try MembershipHeartbeat(replica: try replica("a"), store: store, configuration: .init(interval: .seconds(5), ttl: .seconds(5)))
        }
        #expect(throws: ToolOpsError.self) {
            try MembershipHeartbeat(replica: try replica("a"), store: store, configuration: .init(interval: .zero))
        }
    }
}

func readFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count <= 0 { break }
        bytes.append(contentsOf: buffer[0..<count])
    }
    return bytes
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    guard let file = fopen(path, "wb") else { return }
    _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
    fclose(file)
}
