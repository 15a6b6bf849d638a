/// The shared state of one Redis connection, as a value: its phase, the requests callers
/// queued, the requests callers wrote themselves, the waiters, and the flags that decide who
/// writes and when the I/O thread must be woken.
///
/// ``RedisConnection`` keeps it behind a `Mutex`; callers (any task) and the connection's I/O
/// thread change it only through these methods, and do what the returned actions say (send,
/// wake, resume) — so every transition is tested without a socket or a server. Generic over the
/// waiter so tests can use plain values for continuations.
struct RedisConnectionStateMachine<Waiter> {
    struct Request {
        var id: UInt64
        var bytes: [UInt8]
        /// Replies expected; 0 for fire-and-forget writes (pub/sub) and for the rest of a
        /// direct write that did not fit in the socket buffer.
        var replies: Int
    }

    /// A request a caller wrote to the socket itself; the I/O thread adopts it.
    struct DirectWrite {
        var id: UInt64
        var replies: Int
        var sentAt: ContinuousClock.Instant
    }

    enum Phase {
        case connecting
        case open(fd: Int32, directWrites: Bool)
        case closed(RedisClientError)
    }

    /// What a caller does after ``enqueue(_:waiter:isCancelled:)``.
    enum EnqueueAction {
        /// Resume the waiter with this error (nothing was registered).
        case fail(any Error)
        /// The connection is idle: write the request to `fd` now, from the caller's thread,
        /// then report with ``directWriteFinished(_:waiter:sent:at:)``.
        case writeDirectly(fd: Int32)
        /// Queued for the I/O thread; wake it if `wake`.
        case queued(wake: Bool)
    }

    private(set) var phase: Phase = .connecting
    private(set) var pending: [Request] = []
    /// Requests written directly by callers, in order.
    private(set) var sentDirectly: [DirectWrite] = []
    private var waiters: [UInt64: Waiter] = [:]
    /// The I/O thread is (about to be) blocked in poll with nothing left to write.
    private(set) var idle = false
    /// A wake-up byte is on its way; no need to send another.
    private(set) var wakeSignalled = false
    private(set) var closeRequested = false
    /// Requests not yet answered (queued, written, or awaiting replies).
    private(set) var inFlight = 0

    /// Closed, or closing once its in-flight commands are answered.
    var isClosed: Bool {
        if case .closed = phase { return true }
        return closeRequested
    }

    /// The error it closed with, whether it is closing, and its load — what the pool needs.
    var status: PooledConnectionStatus {
        if case .closed(let error) = phase { return PooledConnectionStatus(closedError: error, closing: true, load: inFlight) }
        return PooledConnectionStatus(closedError: nil, closing: closeRequested, load: inFlight)
    }

    var waiterCount: Int { waiters.count }

    /// Failed or aborted: the I/O thread stops without waiting for replies.
    var hasFailed: Bool {
        if case .closed = phase { return true }
        return false
    }

    // MARK: callers

    /// A caller's request. `isCancelled`: the caller's task was cancelled before it got here
    /// (its cancellation handler found nothing to cancel).
    mutating func enqueue(_ request: Request, waiter: Waiter, isCancelled: Bool) -> EnqueueAction {
        if isCancelled { return .fail(CancellationError()) }
        if closeRequested { return .fail(RedisClientError(.clientClosed, "the connection is shutting down")) }
        switch phase {
        case .closed(let error):
            return .fail(error)
        case .open(let fd, let directWrites) where directWrites && idle && pending.isEmpty && inFlight == 0:
            // An idle connection: the caller sends straight away (saves a thread hop on the
            // latency-bound path). With commands in flight, queue instead so the I/O thread
            // writes them together.
            return .writeDirectly(fd: fd)
        default:
            return .queued(wake: queue(request, waiter: waiter))
        }
    }

    /// The outcome of a direct write: `sent` bytes of `request` (≤ 0: nothing, it would have
    /// blocked or failed — the I/O thread takes it). Returns whether to wake the I/O thread.
    mutating func directWriteFinished(_ request: Request, waiter: Waiter, sent: Int, at now: ContinuousClock.Instant) -> Bool {
        if sent <= 0 { return queue(request, waiter: waiter) }
        waiters[request.id] = waiter
        sentDirectly.append(DirectWrite(id: request.id, replies: request.replies, sentAt: now))
        inFlight += 1
        if sent == request.bytes.count { return false }  // the reply will wake the I/O thread
        // The rest goes out through the I/O thread, before anything queued after it.
        pending.append(Request(id: 0, bytes: Array(request.bytes[sent...]), replies: 0))
        return requestWake()
    }

    private mutating func queue(_ request: Request, waiter: Waiter) -> Bool {
        waiters[request.id] = waiter
        pending.append(request)
        inFlight += 1
        guard idle && !wakeSignalled else { return false }
        wakeSignalled = true
        return true
    }

    /// A request nobody waits for (a give-back whose caller has moved on): queued like any
    /// other, its replies read and dropped. Returns whether to wake the I/O thread, or the error
    /// if the connection is closed or closing.
    mutating func enqueueUnawaited(_ request: Request) -> Result<Bool, RedisClientError> {
        if case .closed(let error) = phase { return .failure(error) }
        if closeRequested { return .failure(RedisClientError(.clientClosed, "the connection is shutting down")) }
        pending.append(request)
        inFlight += 1
        guard idle && !wakeSignalled else { return .success(false) }
        wakeSignalled = true
        return .success(true)
    }

    /// A write that expects no reply (pub/sub). Returns the error if the connection is closed.
    mutating func enqueueWrite(_ bytes: [UInt8]) -> RedisClientError? {
        if case .closed(let error) = phase { return error }
        pending.append(Request(id: 0, bytes: bytes, replies: 0))
        return nil
    }

    /// A caller's task was cancelled: its waiter, if it is still waiting (and its request, if
    /// not yet handed to the I/O thread, is dropped so it is never sent).
    mutating func cancel(_ id: UInt64) -> Waiter? {
        guard let waiter = waiters.removeValue(forKey: id) else { return nil }
        if let index = pending.firstIndex(where: { $0.id == id }) {
            pending.remove(at: index)
            inFlight -= 1
        }
        return waiter
    }

    /// Close once everything in flight has been answered.
    mutating func requestClose() { closeRequested = true }

    /// Whether a wake-up byte must be written (none is on its way).
    mutating func requestWake() -> Bool {
        guard !wakeSignalled else { return false }
        wakeSignalled = true
        return true
    }

    /// The connection failed or closed: every waiter, to be failed with `error` — `nil` if it
    /// was already closed.
    mutating func fail(_ error: RedisClientError) -> [Waiter]? {
        if case .closed = phase { return nil }
        phase = .closed(error)
        pending.removeAll()
        sentDirectly.removeAll()
        inFlight = 0
        defer { waiters.removeAll() }
        return Array(waiters.values)
    }

    // MARK: the I/O thread

    /// The handshake succeeded; direct writes are allowed on plain sockets.
    mutating func opened(fd: Int32, directWrites: Bool) { phase = .open(fd: fd, directWrites: directWrites) }

    /// The wake-up pipe was drained while the thread was not in its loop (connect delay).
    mutating func wakeConsumed() { wakeSignalled = false }

    /// Takes the new work. The thread declares itself idle when there is nothing to write
    /// (`hasOutput`: bytes of its own still unwritten), so callers may write directly.
    mutating func takeWork(hasOutput: Bool) -> (direct: [DirectWrite], pending: [Request], closing: Bool) {
        let taken = (sentDirectly, pending, closeRequested)
        sentDirectly.removeAll(keepingCapacity: true)
        pending.removeAll(keepingCapacity: true)
        idle = taken.1.isEmpty && !hasOutput
        return taken
    }

    /// After a write: `true` if more was queued meanwhile (callers saw a busy thread and sent
    /// no wake-up, so take it now); otherwise idle again unless output is left.
    mutating func finishedWriting(hasOutput: Bool) -> Bool {
        if !pending.isEmpty { return true }
        idle = !hasOutput
        return false
    }

    /// Poll returned: no longer idle, any wake-up consumed, and the direct writes to adopt
    /// now (their replies may be in the bytes about to be read).
    mutating func wokeUp() -> [DirectWrite] {
        idle = false
        wakeSignalled = false
        defer { sentDirectly.removeAll(keepingCapacity: true) }
        return sentDirectly
    }

    /// Replies for these requests arrived: the waiters to resume, with their values.
    mutating func complete<Value>(_ completed: [(id: UInt64, value: Value)]) -> [(Waiter, Value)] {
        inFlight -= completed.count
        return completed.compactMap { entry in waiters.removeValue(forKey: entry.id).map { ($0, entry.value) } }
    }
}
