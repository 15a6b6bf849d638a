import Synchronization
import Testing
import ToolOpsCore
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Manual clock", .timeLimit(.minutes(1)))
struct ManualClockTests {
    @Test func sleepersWakeOnlyWhenTimeIsAdvancedPastTheirDeadline() async throws {
        let clock = ManualClock()
        let start = clock.now
        let woke = Flag()
        let sleeper = Task {
            try await clock.sleep(for: .seconds(10))
            woke.set()
        }
        #expect(await eventually { clock.sleeperCount == 1 })
        clock.advance(by: .seconds(9))
        // Still registered: advance(by:) removes exactly the sleepers it wakes, under its lock.
        #expect(clock.sleeperCount == 1)
        clock.advance(by: .seconds(1))
        #expect(clock.sleeperCount == 0)
        try await sleeper.value
        #expect(woke.isSet)
        #expect(clock.now - start == .seconds(10))
    }

    @Test func cancellationEndsASleep() async {
        let clock = ManualClock()
        let sleeper = Task { try await clock.sleep(for: .seconds(10)) }
        #expect(await eventually { clock.sleeperCount == 1 })
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.sleeperCount == 0)
    }
}

@Suite("eventually", .timeLimit(.minutes(1)))
struct EventuallyTests {
    @Test func holdsAsSoonAsTheConditionDoesAndGivesUpAfterItsTimeout() async {
        let flag = Mutex(false)
        let setter = Task {
            try? await Task.sleep(for: .milliseconds(20))
            flag.withLock { $0 = true }
        }
        #expect(await eventually(within: .seconds(5)) { flag.withLock { $0 } })
        await setter.value
        let started = ContinuousClock.now
        #expect(await eventually(within: .milliseconds(100)) { false } == false)
        #expect(ContinuousClock.now - started >= .milliseconds(100))
    }
}
