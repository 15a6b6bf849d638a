import Foundation
import Testing
@testable import ToolOpsRedis

/// The connection's and the pool's state machines, without a socket or a server.
@Suite("Redis connection state machine")
struct RedisConnectionStateMachineTests {
    typealias Machine = RedisConnectionStateMachine<String>

    func request(_ id: UInt64, bytes: Int = 10, replies: Int = 1) -> Machine.Request {
        Machine.Request(id: id, bytes: Array(repeating: UInt8(ascii: "x"), count: bytes), replies: replies)
    }

    /// Open on a plain socket, with the I/O thread idle in poll.
    func idleOpenMachine(directWrites: Bool = true) -> Machine {
        var machine = Machine()
        machine.opened(fd: 7, directWrites: directWrites)
        _ = machine.takeWork(hasOutput: false)
        return machine
    }

    @Test func requestsQueueWhileConnectingWithoutWakingABusyThread() {
        var machine = Machine()
        guard case .queued(let wake) = machine.enqueue(request(1), waiter: "a", isCancelled: false) else {
            Issue.record("expected queued")
            return
        }
        #expect(!wake)  // the I/O thread is connecting, not sleeping in poll
        #expect(machine.inFlight == 1)
        let work = machine.takeWork(hasOutput: false)
        #expect(work.pending.map(\.id) == [1])
        #expect(!machine.idle)  // it took work, so it is about to write
    }

    @Test func anIdleThreadIsWokenOnceForAnyNumberOfQueuedRequests() {
        var machine = idleOpenMachine(directWrites: false)  // TLS: callers never write directly
        #expect(machine.idle)
        guard case .queued(true) = machine.enqueue(request(1), waiter: "a", isCancelled: false),
            case .queued(false) = machine.enqueue(request(2), waiter: "b", isCancelled: false)
        else {
            Issue.record("expected one wake-up, then none")
            return
        }
        #expect({ machine.wokeUp() }().isEmpty)
        #expect(!machine.wakeSignalled && !machine.idle)
        #expect({ machine.takeWork(hasOutput: false) }().pending.map(\.id) == [1, 2])
    }

    @Test func anIdleConnectionLetsTheCallerWriteAndTheThreadAdoptsIt() {
        var machine = idleOpenMachine()
        guard case .writeDirectly(let fd) = machine.enqueue(request(1), waiter: "a", isCancelled: false) else {
            Issue.record("expected a direct write")
            return
        }
        #expect(fd == 7)
        #expect(!{ machine.directWriteFinished(request(1), waiter: "a", sent: 10, at: .now) }())  // the reply wakes the thread
        #expect(machine.inFlight == 1 && machine.pending.isEmpty)
        // With a command in flight the next caller queues (to be batched by the I/O thread).
        guard case .queued = machine.enqueue(request(2), waiter: "b", isCancelled: false) else {
            Issue.record("expected queued behind the direct write")
            return
        }
        #expect({ machine.wokeUp() }().map(\.id) == [1])
        #expect({ machine.complete([(id: 1, value: "PONG")]) }().map { "\($0.0)=\($0.1)" } == ["a=PONG"])
        #expect(machine.inFlight == 1)
    }

    @Test func aPartialDirectWriteLeavesTheRestToTheThreadFirst() {
        var machine = idleOpenMachine()
        _ = machine.enqueue(request(1, bytes: 10), waiter: "a", isCancelled: false)
        #expect({ machine.directWriteFinished(request(1, bytes: 10), waiter: "a", sent: 4, at: .now) }())  // wake for the rest
        #expect(machine.pending.count == 1)
        #expect(machine.pending[0].bytes.count == 6 && machine.pending[0].replies == 0)
        #expect(machine.sentDirectly.map(\.id) == [1])
        // A second caller neither writes directly (output pending) nor sends another wake-up.
        guard case .queued(false) = machine.enqueue(request(2), waiter: "b", isCancelled: false) else {
            Issue.record("expected queued without a second wake-up")
            return
        }
        #expect(machine.inFlight == 2)
    }

    @Test func aDirectWriteThatWouldBlockIsQueued() {
        var machine = idleOpenMachine()
        _ = machine.enqueue(request(1), waiter: "a", isCancelled: false)
        #expect({ machine.directWriteFinished(request(1), waiter: "a", sent: -1, at: .now) }())
        #expect(machine.pending.map(\.id) == [1] && machine.sentDirectly.isEmpty && machine.inFlight == 1)
    }

    @Test func cancellingARequestNotYetHandedOverDropsIt() {
        var machine = Machine()
        _ = machine.enqueue(request(1), waiter: "a", isCancelled: false)
        _ = machine.enqueue(request(2), waiter: "b", isCancelled: false)
        #expect({ machine.cancel(1) }() == "a")
        #expect(machine.pending.map(\.id) == [2] && machine.inFlight == 1)
        #expect({ machine.cancel(1) }() == nil)  // already gone
        // Handed over: the waiter goes, the request stays (its reply must still be read).
        _ = machine.takeWork(hasOutput: false)
        #expect({ machine.cancel(2) }() == "b")
        #expect(machine.inFlight == 1)
        #expect({ machine.complete([(id: 2, value: "late")]) }().isEmpty)
        #expect(machine.inFlight == 0)
    }

    @Test func aCancelledCallerIsRefusedBeforeAnythingIsRegistered() {
        var machine = idleOpenMachine()
        guard case .fail(let error) = machine.enqueue(request(1), waiter: "a", isCancelled: true) else {
            Issue.record("expected a failure")
            return
        }
        #expect(error is CancellationError)
        #expect(machine.inFlight == 0 && machine.waiterCount == 0)
    }

    @Test func closingRefusesNewWorkAndFailingReleasesEveryWaiterOnce() {
        var machine = Machine()
        _ = machine.enqueue(request(1), waiter: "a", isCancelled: false)
        machine.requestClose()
        #expect(machine.isClosed)
        guard case .fail(let closing as RedisClientError) = machine.enqueue(request(2), waiter: "b", isCancelled: false) else {
            Issue.record("expected clientClosed")
            return
        }
        #expect(closing.code == .clientClosed)
        let failed = machine.fail(RedisClientError(.connectionClosed, "gone"))
        #expect(failed == ["a"])
        #expect({ machine.fail(RedisClientError(.connectionClosed, "again")) }() == nil)
        #expect(machine.status.closedError?.code == .connectionClosed)
        #expect(machine.inFlight == 0 && machine.pending.isEmpty)
        #expect({ machine.enqueueWrite([1]) }()?.code == .connectionClosed)
    }

    @Test func workQueuedDuringAWriteIsTakenBeforeSleeping() {
        var machine = idleOpenMachine(directWrites: false)
        _ = machine.enqueue(request(1), waiter: "a", isCancelled: false)
        _ = machine.wokeUp()
        _ = machine.takeWork(hasOutput: false)
        _ = machine.enqueue(request(2), waiter: "b", isCancelled: false)  // while the thread writes
        #expect({ machine.finishedWriting(hasOutput: false) }())
        _ = machine.takeWork(hasOutput: false)
        #expect(!{ machine.finishedWriting(hasOutput: true) }())
        #expect(!machine.idle)  // own output left: callers must not write directly
        #expect(!{ machine.finishedWriting(hasOutput: false) }())
        #expect(machine.idle)
    }

    @Test func wakeUpsAreSentOnceUntilTheThreadConsumesThem() {
        var machine = Machine()
        #expect({ machine.requestWake() }())
        #expect(!{ machine.requestWake() }())
        machine.wakeConsumed()
        #expect({ machine.requestWake() }())
    }
}

@Suite("Redis pool state machine")
struct RedisPoolStateMachineTests {
    struct FakeConnection: PooledConnection, Equatable {
        var id: Int
    }
    typealias Pool = RedisPoolStateMachine<FakeConnection>
    typealias Status = PooledConnectionStatus

    let start = ContinuousClock.now
    let backoff: (Int) -> Duration = { failures in failures == 0 ? .zero : .milliseconds(100 * failures) }

    func choose(_ pool: inout Pool, at offset: Duration = .zero, _ statuses: [Int: Status]) -> Pool.Choice {
        pool.choose(now: start + offset, threshold: 64, backoff: backoff) { statuses[$0.id] ?? Status(closing: false, load: 0) }
    }

    func describe(_ choice: Pool.Choice) -> String {
        switch choice {
        case .use(let connection): "use \(connection.id)"
        case .open(let slot): "open \(slot)"
        case .fail(let error): "fail \(error.code)"
        }
    }

    @Test func fillsTheFirstConnectionBeforeOpeningAnother() {
        var pool = Pool(size: 2)
        #expect(describe(choose(&pool, [:])) == "open 0")
        pool.assign(FakeConnection(id: 1), to: 0)
        #expect(describe(choose(&pool, [1: Status(closing: false, load: 63)])) == "use 1")
        #expect(describe(choose(&pool, [1: Status(closing: false, load: 64)])) == "open 1")
        pool.assign(FakeConnection(id: 2), to: 1)
        // Both at the threshold: the least loaded.
        #expect(describe(choose(&pool, [1: Status(closing: false, load: 90), 2: Status(closing: false, load: 70)])) == "use 2")
    }

    /// Back-pressure: when every connection has the maximum waiting, the command is refused
    /// at once instead of queueing without bound.
    @Test func everyConnectionAtTheMaximumIsOverloaded() {
        var pool = Pool(size: 2)
        pool.assign(FakeConnection(id: 1), to: 0)
        pool.assign(FakeConnection(id: 2), to: 1)
        func choose(_ statuses: [Int: Status]) -> String {
            describe(pool.choose(now: start, threshold: 64, maximum: 100, backoff: backoff) { statuses[$0.id] ?? Status(closing: false, load: 0) })
        }
        #expect(choose([1: Status(closing: false, load: 100), 2: Status(closing: false, load: 99)]) == "use 2")
        #expect(choose([1: Status(closing: false, load: 100), 2: Status(closing: false, load: 100)]) == "fail overloaded")
    }

    @Test func aClosedConnectionFreesItsSlotOnceWithGrowingBackoff() {
        var pool = Pool(size: 1)
        pool.assign(FakeConnection(id: 1), to: 0)
        let broken = RedisClientError(.connectionClosed, "reset")
        // A working connection broke: retry at once.
        #expect({ pool.closed(slot: 0, id: 1, error: broken, now: start, backoff: backoff) }() == .zero)
        #expect({ pool.closed(slot: 0, id: 1, error: broken, now: start, backoff: backoff) }() == nil)  // once
        #expect(describe(choose(&pool, [:])) == "open 0")
        pool.assign(FakeConnection(id: 2), to: 0)
        let refused = RedisClientError(.connectionRefused, "refused")
        #expect({ pool.closed(slot: 0, id: 2, error: refused, now: start, backoff: backoff) }() == .milliseconds(100))
        // Backing off: the last error, not a new connection.
        #expect(describe(choose(&pool, at: .milliseconds(50), [:])) == "fail connectionRefused")
        #expect(describe(choose(&pool, at: .milliseconds(150), [:])) == "open 0")
        // A successful handshake forgives the failures.
        pool.assign(FakeConnection(id: 3), to: 0)
        pool.opened(slot: 0, id: 3)
        #expect(pool.slots[0].consecutiveFailures == 0 && pool.slots[0].retryAt == nil)
    }

    @Test func aConnectionSeenClosedBeforeItsCallbackIsAccountedForByTheChoice() {
        var pool = Pool(size: 1)
        pool.assign(FakeConnection(id: 1), to: 0)
        let closed = Status(closedError: RedisClientError(.connectionClosed, "gone"), closing: true, load: 0)
        #expect(describe(choose(&pool, [1: closed])) == "open 0")
        #expect(pool.slots[0].connection == nil && pool.slots[0].consecutiveFailures == 1)
        // The late callback changes nothing.
        #expect({ pool.closed(slot: 0, id: 1, error: RedisClientError(.connectionClosed, "gone"), now: start, backoff: backoff) }() == nil)
    }

    @Test func closingConnectionsAreNotChosenAndShutDownRefusesEverything() {
        var pool = Pool(size: 1)
        pool.assign(FakeConnection(id: 1), to: 0)
        // A closing connection takes no new command; its slot gets a new connection.
        #expect(describe(choose(&pool, [1: Status(closing: true, load: 0)])) == "open 0")
        #expect({ pool.shutDown() }() == [FakeConnection(id: 1)])
        #expect(describe(choose(&pool, [:])) == "fail clientClosed")
        #expect({ pool.closed(slot: 0, id: 1, error: RedisClientError(.clientClosed, "x"), now: start, backoff: backoff) }() == nil)
    }
}

@Suite("Connecting to several resolved addresses, and resolving within the deadline")
struct AddressSelectionTests {
    typealias Address = PosixSocket.Address
    let v6 = Address(family: 10, socketType: 1, protocolNumber: 6, bytes: [6])
    let v4 = Address(family: 2, socketType: 1, protocolNumber: 6, bytes: [4])

    /// Dual-stack DNS with an unreachable AAAA record: the IPv6 attempt times out within its
    /// share of the connect timeout, and IPv4 is still tried, with the rest.
    @Test func anAddressThatTimesOutLeavesTimeForTheNext() throws {
        let start = ContinuousClock.now
        var clock = start
        var tried: [(UInt8, Duration)] = []
        let connected = try PosixSocket.connectAny([v6, v4], deadline: start + .seconds(4), now: { clock }) { (address, until) throws(RedisClientError) -> String in
            tried.append((address.bytes[0], clock.duration(to: until)))
            if address.bytes[0] == 6 {
                clock = until  // it hung until its own deadline
                throw RedisClientError(.connectTimeout, "timed out")
            }
            return "connected over IPv\(address.bytes[0])"
        }
        #expect(connected == "connected over IPv4")
        #expect(tried.map(\.0) == [6, 4])
        #expect(tried.map(\.1) == [.seconds(2), .seconds(2)])
    }

    @Test func everyAddressTimingOutIsAConnectTimeoutAndARefusalIsNot() throws {
        let start = ContinuousClock.now
        var clock = start
        let timeout = #expect(throws: RedisClientError.self) {
            try PosixSocket.connectAny([v6, v4], deadline: start + .seconds(4), now: { clock }) { (_, until) throws(RedisClientError) -> Int in
                clock = until
                throw RedisClientError(.connectTimeout, "timed out")
            }
        }
        #expect(timeout?.code == .connectTimeout)
        clock = start
        let refused = #expect(throws: RedisClientError.self) {
            try PosixSocket.connectAny([v6, v4], deadline: start + .seconds(4), now: { clock }) { (address, until) throws(RedisClientError) -> Int in
                if address.bytes[0] == 6 { clock = until; throw RedisClientError(.connectTimeout, "timed out") }
                throw RedisClientError(.connectionRefused, "refused")
            }
        }
        #expect(refused?.code == .connectionRefused)
    }

    /// `getaddrinfo` has no timeout of its own (a dead DNS server holds it for 5 s per try):
    /// the connection stops waiting at its deadline.
    @Test func aSlowLookupEndsAtTheDeadline() throws {
        let started = ContinuousClock.now
        let error = #expect(throws: RedisClientError.self) {
            try PosixSocket.resolve(host: "slow.example", port: 6379, deadline: .now + .milliseconds(200)) { _, _ in
                Thread.sleep(forTimeInterval: 3)
                return .failure(RedisClientError(.addressResolution, "too late"))
            }
        }
        #expect(error?.code == .connectTimeout)
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(try PosixSocket.resolve(host: "localhost", port: 6379, deadline: .now + .seconds(5)).isEmpty == false)
    }
}

@Suite("Unawaited requests on the connection state machine")
struct UnawaitedRequestTests {
    typealias Machine = RedisConnectionStateMachine<String>

    /// A give-back nobody waits for counts as in flight until its reply is read (so a closing
    /// connection stays open for it), and is refused once the connection closes.
    @Test func anUnawaitedRequestIsCountedAndCompletedWithoutAWaiter() {
        var machine = Machine()
        machine.opened(fd: 3, directWrites: true)
        _ = machine.takeWork(hasOutput: false)  // idle
        #expect(machine.enqueueUnawaited(.init(id: 1, bytes: [1], replies: 1)) == .success(true))
        #expect(machine.enqueueUnawaited(.init(id: 2, bytes: [2], replies: 1)) == .success(false))  // wake already on its way
        #expect(machine.inFlight == 2 && machine.waiterCount == 0)
        let work = machine.takeWork(hasOutput: false)
        #expect(work.pending.map(\.id) == [1, 2])
        let resumed: [(String, Int)] = machine.complete([(id: 1, value: 0), (id: 2, value: 0)])
        #expect(resumed.isEmpty && machine.inFlight == 0)
        machine.requestClose()
        #expect(machine.enqueueUnawaited(.init(id: 3, bytes: [3], replies: 1)) != .success(true))
    }
}
