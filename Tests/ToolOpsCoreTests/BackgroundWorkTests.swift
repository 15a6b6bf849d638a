import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing
@testable import ToolOpsCore
import ToolOpsTesting

/// Jobs that wait until released (or cancelled), recording what happened to them.
final class GatedJobs: Sendable {
    let started = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
    let cancelled = Atomic<Int>(0)
    private let gate = Mutex<[CheckedContinuation<Void, Never>]>([])
    private let open = Atomic<Bool>(false)

    var job: BackgroundWork.Job {
        { [self] in
            started.add(1, ordering: .relaxed)
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let resumeNow = gate.withLock { waiting -> Bool in
                        if open.load(ordering: .relaxed) || Task.isCancelled { return true }
                        waiting.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                releaseAll()
            }
            if Task.isCancelled { cancelled.add(1, ordering: .relaxed) }
            finished.add(1, ordering: .relaxed)
        }
    }

    /// Lets every waiting job (and every later one) end.
    func releaseAll() {
        open.store(true, ordering: .relaxed)
        for continuation in gate.withLock({ waiting in defer { waiting.removeAll() }; return waiting }) { continuation.resume() }
    }
}

@Suite("Background work", .timeLimit(.minutes(1)))
struct BackgroundWorkTests {
    @Test func jobsAreTakenOnlyWhileTheServiceRuns() async throws {
        let work = try BackgroundWork()
        let ran = Atomic<Int>(0)
        #expect(!work.submit { ran.add(1, ordering: .relaxed) })
        try await testGracefulShutdown { shutdown in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await work.run() }
                #expect(await eventually { work.submit { ran.add(1, ordering: .relaxed) } })
                #expect(await eventually { ran.load(ordering: .relaxed) == 1 })
                shutdown.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        #expect(!work.submit { ran.add(1, ordering: .relaxed) })
        #expect(ran.load(ordering: .relaxed) == 1)
    }

    @Test func atMostTheConfiguredNumberRunAtOnceAndTheQueueIsBounded() async throws {
        let work = try BackgroundWork(.init(concurrency: 2, maximumPending: 3))
        let jobs = GatedJobs()
        try await testGracefulShutdown { shutdown in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await work.run() }
                #expect(await eventually { work.submit(jobs.job) })
                #expect(work.submit(jobs.job))
                #expect(await eventually { jobs.started.load(ordering: .relaxed) == 2 })
                for _ in 0..<3 { #expect(work.submit(jobs.job)) }
                #expect(work.pendingJobs == 3)
                // Two running and three waiting: a sixth is refused, not queued.
                #expect(!work.submit(jobs.job))
                #expect(work.runningJobs == 2)
                jobs.releaseAll()
                #expect(await eventually { jobs.finished.load(ordering: .relaxed) == 5 && work.runningJobs == 0 })
                #expect(jobs.cancelled.load(ordering: .relaxed) == 0)
                shutdown.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
    }

    @Test func shutdownCancelsTheJobsRunningAndQueuedAndWaitsForThem() async throws {
        let work = try BackgroundWork(.init(concurrency: 1, maximumPending: 10))
        let jobs = GatedJobs()
        try await testGracefulShutdown { shutdown in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await work.run() }
                #expect(await eventually { work.submit(jobs.job) })
                for _ in 0..<3 { #expect(work.submit(jobs.job)) }
                #expect(await eventually { jobs.started.load(ordering: .relaxed) == 1 })
                shutdown.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        // run() returned only after every job ended; the queued ones ran, cancelled, so that
        // nothing waiting on their outcome is left waiting.
        #expect(jobs.finished.load(ordering: .relaxed) == 4)
        #expect(jobs.cancelled.load(ordering: .relaxed) == 4)
        #expect(work.runningJobs == 0 && work.pendingJobs == 0)
    }

    @Test func aCancelledServiceStopsLikeAShutdown() async throws {
        let work = try BackgroundWork()
        let jobs = GatedJobs()
        let runner = Task { try await work.run() }
        #expect(await eventually { work.submit(jobs.job) })
        #expect(await eventually { jobs.started.load(ordering: .relaxed) == 1 })
        runner.cancel()
        try await runner.value
        #expect(jobs.cancelled.load(ordering: .relaxed) == 1)
        #expect(!work.submit(jobs.job))
    }

    @Test func aQueueThatNeverEmptiesStaysBounded() {
        var queue = FIFOQueue<Int>()
        for value in 0..<10 { queue.append(value) }
        // Always ten waiting: taken elements must not pile up in front of them.
        for value in 10..<10_000 {
            queue.append(value)
            #expect(queue.popFirst() == value - 10)
        }
        #expect(queue.count == 10)
        #expect(queue.storedCount < 200)
        while queue.popFirst() != nil {}
        #expect(queue.count == 0 && queue.storedCount == 0)
    }

    @Test func itRunsOnceAndRefusesAnImpossibleConfiguration() async throws {
        #expect(throws: ToolOpsError.self) { try BackgroundWork(.init(concurrency: 0)) }
        #expect(throws: ToolOpsError.self) { try BackgroundWork(.init(maximumPending: 0)) }
        let work = try BackgroundWork()
        let runner = Task { try await work.run() }
        _ = await eventually { work.submit {} }
        await #expect(throws: ToolOpsError.self) { try await work.run() }
        runner.cancel()
        try await runner.value
    }
}
