import Testing
import ToolOpsCore

@testable import ToolOpsRedisBackend

/// Slot reuse without Redis: which released slots are kept, for how long, and for whom.
@Suite("Bulkhead spares")
struct BulkheadSparesTests {
    let start = ClockInstant(nanoseconds: 1_000_000_000)
    let lease = Duration.seconds(300)

    func at(_ milliseconds: Int) -> ClockInstant { start + .milliseconds(milliseconds) }

    @Test func smallBulkheadsGiveSlotsBackAtOnce() {
        var spares = BulkheadSpares()
        #expect(spares.capacity(limit: 15) == 0 && spares.capacity(limit: 16) == 1 && spares.capacity(limit: 10_000) == 625)
        spares.granted(1, key: "k", limit: 15, lease: lease, now: at(0))
        let r1 = spares.released(1, now: at(1))
        #expect(!r1)
        #expect(BulkheadSpares(configuration: .init(hold: .zero)).capacity(limit: 10_000) == 0, "hold 0: reuse off")
    }

    @Test func aReleasedSlotIsKeptForTheNextCallOnTheSameBulkhead() {
        var spares = BulkheadSpares()
        spares.granted(7, key: "k", limit: 64, lease: lease, now: at(0))
        let r2 = spares.released(7, now: at(1))
        #expect(r2)
        let r3 = spares.take(key: "other", limit: 64, lease: lease, now: at(2))
        #expect(r3.token == nil)
        let taken = spares.take(key: "k", limit: 64, lease: lease, now: at(2))
        #expect(taken.token == 7 && taken.stale.isEmpty)
        let r4 = spares.take(key: "k", limit: 64, lease: lease, now: at(2))
        #expect(r4.token == nil, "one slot, one call")
        // The reused slot comes back again when that call ends.
        let r5 = spares.released(7, now: at(3))
        #expect(r5)
        #expect(spares.spareCount == 1)
    }

    @Test func atMostAFractionOfTheLimitIsKept() {
        var spares = BulkheadSpares()
        for token in UInt64(1)...5 { spares.granted(token, key: "k", limit: 32, lease: lease, now: at(0)) }  // 2 spares at most
        let kept = (UInt64(1)...5).map { spares.released($0, now: at(1)) }
        #expect(kept == [true, true, false, false, false])
        #expect(spares.spareCount == 2)
    }

    @Test func staleSparesAreNotReusedButGivenBack() {
        var spares = BulkheadSpares()
        spares.granted(1, key: "k", limit: 64, lease: lease, now: at(0))
        spares.granted(2, key: "k", limit: 64, lease: lease, now: at(0))
        let r6 = spares.released(1, now: at(1))
        let r7 = spares.released(2, now: at(1))
        #expect(r6 && r7)
        // The hold (10 ms) is over: both stale.
        let late = spares.take(key: "k", limit: 64, lease: lease, now: at(20))
        #expect(late.token == nil && Set(late.stale) == [1, 2])
        // A lease not renewed for a third of it is not handed to a new call, which would renew
        // it only a third of a lease after its own start.
        spares.granted(3, key: "k", limit: 64, lease: lease, now: at(0))
        let r8 = spares.released(3, now: at(100_000))
        #expect(r8)
        let old = spares.take(key: "k", limit: 64, lease: lease, now: at(100_001))
        #expect(old.token == nil && old.stale == [3])
        spares.granted(4, key: "k", limit: 64, lease: lease, now: at(0))
        spares.renewed(4, now: at(99_999))
        let r9 = spares.released(4, now: at(100_000))
        #expect(r9)
        let r10 = spares.take(key: "k", limit: 64, lease: lease, now: at(100_001))
        #expect(r10.token == 4, "renewed: fresh again")
    }

    @Test func expiredSparesAreDueToGoBack() {
        var spares = BulkheadSpares()
        spares.granted(1, key: "a", limit: 64, lease: lease, now: at(0))
        spares.granted(2, key: "b", limit: 64, lease: lease, now: at(5))
        let r11 = spares.released(1, now: at(0))
        let r12 = spares.released(2, now: at(5))
        #expect(r11 && r12)
        #expect(spares.nextExpiry == at(10))
        let r13 = spares.expired(now: at(10))
        #expect(r13 == ["a": [1]])
        #expect(spares.nextExpiry == at(15))
        let r14 = spares.expired(now: at(11), all: true)
        #expect(r14 == ["b": [2]], "at shutdown: everything")
        #expect(spares.nextExpiry == nil)
        // Not kept when nothing would give it back.
        spares.granted(3, key: "a", limit: 64, lease: lease, now: at(20))
        let r15 = spares.released(3, now: at(21), keep: false)
        #expect(!r15)
        #expect(spares.spareCount == 0)
    }
}

/// The permits of calls in flight: renewed a third of a lease after their last renewal, and
/// tracked only up to a bound.
@Suite("Bulkhead permits in flight")
struct BulkheadInFlightTests {
    let start = ClockInstant(nanoseconds: 1_000_000_000)

    func at(_ milliseconds: Int) -> ClockInstant { start + .milliseconds(milliseconds) }

    @Test func leasesFallDueAThirdOfALeaseAfterTheirLastRenewal() {
        var book = BulkheadSpares()
        book.granted(1, key: "a", limit: 4, lease: .seconds(3), now: at(0))
        book.granted(2, key: "b", limit: 4, lease: .seconds(30), now: at(0))
        book.granted(3, key: "c", limit: 4, lease: .milliseconds(300), now: at(0))  // too short for the store to renew
        let early = book.dueForRenewal(now: at(500), minimumLease: .seconds(1), check: .milliseconds(100))
        #expect(early.due.isEmpty && early.next == at(600))
        let due = book.dueForRenewal(now: at(1000), minimumLease: .seconds(1), check: .seconds(60))
        #expect(due.due.map(\.token) == [1] && due.next == at(10_000))
        book.renewed(1, now: at(1000))
        #expect(book.dueForRenewal(now: at(1000), minimumLease: .seconds(1), check: .seconds(60)).due.isEmpty)
        // A lapsed lease is forgotten: not renewed, and its slot not kept.
        book.lapsed(1)
        #expect(book.inFlight[1]?.renewedAt == nil)
        let kept = book.released(1, now: at(1001))
        #expect(!kept)
        // A released permit is no longer renewed.
        _ = book.released(2, now: at(1001))
        #expect(book.dueForRenewal(now: at(20_000), minimumLease: .seconds(1), check: .seconds(60)).due.isEmpty)
    }

    @Test func aWaitingCallersSlotIsRenewedButNeverKept() {
        var book = BulkheadSpares()
        book.granted(1, key: "k", limit: 64, lease: .seconds(3), now: at(0), reusable: false)
        #expect(book.dueForRenewal(now: at(1000), minimumLease: .seconds(1), check: .seconds(1)).due.map(\.token) == [1])
        let kept = book.released(1, now: at(1001))
        #expect(!kept, "kept slots would jump the queue of waiters")
    }

    @Test func permitsBeyondTheBoundAreNotTracked() {
        var book = BulkheadSpares(configuration: .init(maximumTracked: 2))
        let first = book.granted(1, key: "k", limit: 64, lease: .seconds(3), now: at(0))
        let second = book.granted(2, key: "k", limit: 64, lease: .seconds(3), now: at(0))
        let third = book.granted(3, key: "k", limit: 64, lease: .seconds(3), now: at(0))
        #expect(first && second)
        #expect(!third, "its caller renews it")
        #expect(book.inFlight.count == 2)
        let kept = book.released(3, now: at(1))
        #expect(!kept)
    }
}

extension BulkheadInFlightTests {
    /// While Redis cannot be reached a renewal is tried again soon, but the lease does not
    /// count as renewed: its slot, once released, is not reused past a third of the lease
    /// after its last real renewal (the lease may have lapsed in Redis by then).
    @Test func aFailedRenewalIsRetriedWithoutFreshingTheLease() {
        var book = BulkheadSpares()
        let lease = Duration.seconds(3)
        book.granted(1, key: "k", limit: 64, lease: lease, now: at(0))
        book.renewalFailed(1, retryAt: at(1100))
        let before = book.dueForRenewal(now: at(1050), minimumLease: .seconds(1), check: .seconds(1))
        #expect(before.due.isEmpty && before.next == at(1100))
        #expect(book.dueForRenewal(now: at(1100), minimumLease: .seconds(1), check: .seconds(1)).due.map(\.token) == [1])
        #expect(book.inFlight[1]?.renewedAt == at(0))
        let kept = book.released(1, now: at(1200))
        #expect(kept)
        let reused = book.take(key: "k", limit: 64, lease: lease, now: at(1201))
        #expect(reused.token == nil && reused.stale == [1], "not renewed for a third of its lease: given back, not reused")
    }
}
