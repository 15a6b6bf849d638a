import Logging
import Metrics
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One connection to Redis, driven by its own I/O thread.
///
/// Callers on any task enqueue encoded commands; the I/O thread writes everything queued
/// since its last write in one go (automatic pipelining) and matches replies to callers in
/// FIFO order. When the connection is idle, a caller on a plain socket writes its command
/// directly (no thread hop on the way out).
///
/// A connection is used once: after it fails or closes, the pool makes a new one.
final class RedisConnection: Sendable, PooledConnection {
    typealias Continuation = CheckedContinuation<RESPValue, any Error>

    /// What the I/O thread does with replies.
    enum Mode: Sendable {
        /// Replies answer commands in FIFO order.
        case commands
        /// Every reply after the handshake goes to the handler (pub/sub).
        case push(@Sendable (RESPValue) -> Void)
    }

    typealias StateMachine = RedisConnectionStateMachine<Continuation>
    typealias Request = StateMachine.Request

    let id: Int
    let state = Mutex(StateMachine())
    private let requestIDs = Atomic<UInt64>(0)
    private let wakeRead: Int32
    private let wakeWrite: Int32
    let configuration: RedisConfiguration
    let tls: TLSContext?
    let logger: Logger
    let mode: Mode
    let onClose: @Sendable (RedisClientError) -> Void
    let onOpen: @Sendable () -> Void
    let instrumentation: RedisInstrumentation?

    init(
        id: Int, configuration: RedisConfiguration, tls: TLSContext?, logger: Logger, mode: Mode = .commands,
        connectDelay: Duration = .zero, instrumentation: RedisInstrumentation? = nil,
        onOpen: @escaping @Sendable () -> Void = {},
        onClose: @escaping @Sendable (RedisClientError) -> Void = { _ in }
    ) throws(RedisClientError) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            throw RedisClientError(.connectionRefused, "cannot create a wake-up pipe: \(PosixSocket.errnoString())")
        }
        PosixSocket.setNonBlocking(fds[0])
        PosixSocket.setNonBlocking(fds[1])
        self.wakeRead = fds[0]
        self.wakeWrite = fds[1]
        self.id = id
        self.configuration = configuration
        self.tls = tls
        var logger = logger
        logger[metadataKey: "redis.connection"] = "\(id)"
        self.logger = logger
        self.mode = mode
        self.onOpen = onOpen
        self.onClose = onClose
        self.instrumentation = instrumentation
        let started = IOThread.start { [self] in
            let io = ConnectionIO(connection: self)
            io.run(connectDelay: connectDelay)
        }
        guard started else {
            _ = state.withLock { $0.fail(RedisClientError(.connectionRefused, "cannot start an I/O thread")) }
            throw RedisClientError(.connectionRefused, "cannot start an I/O thread (out of resources)")
        }
    }

    deinit {
        // Closed only here: a caller may still signal the pipe after the I/O thread ended.
        Glibc.close(wakeRead)
        Glibc.close(wakeWrite)
    }

    var isClosed: Bool { state.withLock { $0.isClosed } }

    /// Everything the pool needs to pick a connection, read under one lock.
    var status: PooledConnectionStatus { state.withLock { $0.status } }

    /// Commands waiting or in flight, for picking the least-loaded connection.
    var load: Int { state.withLock { $0.inFlight } }

    /// Sends an encoded request expecting `replies` replies. One reply is returned as is;
    /// several come back as one `.array`.
    func execute(_ bytes: [UInt8], replies: Int) async throws -> RESPValue {
        let id = requestIDs.add(1, ordering: .relaxed).newValue
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: Continuation) in
                enqueue(Request(id: id, bytes: bytes, replies: replies), continuation: continuation, isCancelled: Task.isCancelled)
            }
        } onCancel: {
            cancel(id)
        }
    }

    /// Sends without anyone waiting: the replies are read and dropped in order, like those of a
    /// cancelled caller. `false` if the connection is closed.
    @discardableResult
    func executeUnawaited(_ bytes: [UInt8], replies: Int) -> Bool {
        let id = requestIDs.add(1, ordering: .relaxed).newValue
        switch state.withLock({ $0.enqueueUnawaited(Request(id: id, bytes: bytes, replies: replies)) }) {
        case .success(let wake):
            if wake { signalWake() }
            return true
        case .failure:
            return false
        }
    }

    /// Like ``execute(_:replies:)`` but not cancelled with the caller's task: for a command that
    /// must run even when its caller was cancelled (returning a slot), waited for all the same.
    func executeIgnoringCancellation(_ bytes: [UInt8], replies: Int) async throws -> RESPValue {
        let id = requestIDs.add(1, ordering: .relaxed).newValue
        return try await withCheckedThrowingContinuation { (continuation: Continuation) in
            enqueue(Request(id: id, bytes: bytes, replies: replies), continuation: continuation, isCancelled: false)
        }
    }

    /// Writes without waiting for a reply (pub/sub mode).
    func write(_ bytes: [UInt8]) throws {
        let error = state.withLock { $0.enqueueWrite(bytes) }
        if let error { throw error }
        wake()
    }

    private func enqueue(_ request: Request, continuation: Continuation, isCancelled: Bool) {
        enum Action { case fail(any Error), wake, none }
        let action: Action = state.withLock { state in
            switch state.enqueue(request, waiter: continuation, isCancelled: isCancelled) {
            case .fail(let error): return .fail(error)
            case .queued(let wake): return wake ? .wake : .none
            case .writeDirectly(let fd):
                // Under the lock, so the I/O thread cannot interleave a write of its own.
                let sent = request.bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                return state.directWriteFinished(request, waiter: continuation, sent: sent, at: .now) ? .wake : .none
            }
        }
        switch action {
        case .fail(let error): continuation.resume(throwing: error)
        case .wake: signalWake()
        case .none: break
        }
    }

    private func cancel(_ id: UInt64) {
        // Not registered yet: enqueue() sees Task.isCancelled. Already answered: nothing to do.
        let continuation = state.withLock { $0.cancel(id) }
        continuation?.resume(throwing: CancellationError())
    }

    /// Closes after everything in flight has been answered (bounded by the command timeout).
    func close() {
        state.withLock { $0.requestClose() }
        wake()
    }

    /// Closes now: whatever is in flight fails with `error`, and the I/O thread stops without
    /// waiting for replies (a lease ending during a blocking command).
    func abort(_ error: RedisClientError) {
        state.withLock { $0.requestClose() }
        fail(error)
        wake()
    }

    func wake() {
        if state.withLock({ $0.requestWake() }) { signalWake() }
    }

    private func signalWake() {
        var byte: UInt8 = 1
        _ = Glibc.write(wakeWrite, &byte, 1)
    }

    fileprivate func drainWake() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while buffer.withUnsafeMutableBytes({ read(wakeRead, $0.baseAddress, $0.count) }) > 0 {}
    }

    fileprivate var wakeFD: Int32 { wakeRead }

    /// Fails everything queued and in flight and marks the connection closed.
    fileprivate func fail(_ error: RedisClientError) {
        let continuations = state.withLock { $0.fail(error) }
        guard let continuations else { return }
        // Let the owner account for the failure before woken callers ask for a connection.
        onClose(error)
        for continuation in continuations { continuation.resume(throwing: error) }
    }
}

/// The I/O thread's side of a connection: socket, TLS session, reader and the FIFO of
/// requests awaiting replies. Only the I/O thread touches it.
private final class ConnectionIO {
    struct InFlight {
        var id: UInt64
        var remaining: Int
        var deadline: ContinuousClock.Instant
        /// A batch (several replies) answers with one `.array` of them.
        let isBatch: Bool
        var collected: [RESPValue] = []
        /// A reply crossed a limit: the caller has its error; what is left of its replies is dropped.
        var rejected = false

        init(id: UInt64, remaining: Int, deadline: ContinuousClock.Instant) {
            self.id = id
            self.remaining = remaining
            self.deadline = deadline
            self.isBatch = remaining > 1
        }
    }

    let connection: RedisConnection
    var fd: Int32 = -1
    var tls: TLSSession?
    let reader: RESPReader
    var plainOut: [UInt8] = []
    var plainOffset = 0
    var cipherOut: [UInt8] = []
    var cipherOffset = 0
    var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    var scratch = [UInt8](repeating: 0, count: 64 * 1024)
    var inFlight = RingBuffer<InFlight>()
    var replies: [RESPValue] = []

    init(connection: RedisConnection) {
        self.connection = connection
        self.reader = RESPReader(limits: connection.configuration.replyLimits)
    }

    deinit { if fd >= 0 { close(fd) } }

    var configuration: RedisConfiguration { connection.configuration }
    var hasOutput: Bool { plainOffset < plainOut.count || cipherOffset < cipherOut.count }

    func run(connectDelay: Duration) {
        do {
            if connectDelay > .zero {
                // Interruptible sleep: close() wakes us through the pipe.
                let until = ContinuousClock.now.advanced(by: connectDelay)
                var pfd = pollfd(fd: connection.wakeFD, events: Int16(POLLIN), revents: 0)
                while ContinuousClock.now < until && !connection.isClosed {
                    _ = poll(&pfd, 1, PosixSocket.milliseconds(until: until))
                    connection.drainWake()
                    connection.state.withLock { $0.wakeConsumed() }
                }
                if connection.isClosed { throw RedisClientError(.clientClosed, "the connection was closed") }
            }
            try connect()
            connection.instrumentation?.connections.increment()
            defer { connection.instrumentation?.connections.decrement() }
            connection.onOpen()
            try loop()
        } catch let error as RedisClientError {
            connection.fail(error)
            return
        } catch {
            connection.fail(RedisClientError(.protocolError, "\(error)"))
            return
        }
        connection.fail(RedisClientError(.clientClosed, "the connection was closed"))
    }

    // MARK: connect and handshake

    /// Busy polling stops paying off once this many replies are awaited (measured: at 64
    /// callers it cost a third of the throughput on 2 cores).
    static let busyPollMaximumInFlight = 16

    private func connect() throws {
        let deadline = ContinuousClock.now.advanced(by: configuration.connectTimeout)
        fd = try PosixSocket.connect(to: configuration.endpoint, deadline: deadline)
        if let context = connection.tls, case .tcp(let host, _) = configuration.endpoint {
            let session = try TLSSession(context: context, host: host)
            try session.handshake(fd: fd, deadline: deadline)
            tls = session
        }
        var handshake: [RedisCommand] = []
        if let password = configuration.password {
            if let user = configuration.username {
                handshake.append(RedisCommand("AUTH", user, password))
            } else {
                handshake.append(RedisCommand("AUTH", password))
            }
        }
        if let name = configuration.clientName { handshake.append(RedisCommand("CLIENT", "SETNAME", name)) }
        if configuration.database != 0 { handshake.append(RedisCommand("SELECT", configuration.database)) }
        // A server at maxclients (or loading) accepts and then answers with an error: only a
        // real reply proves the connection usable.
        handshake.append(RedisCommand("PING"))
        do {
            for command in handshake { plainOut.append(contentsOf: command.encoded) }
            let results = try blockingReplies(handshake.count, deadline: deadline)
            for (command, reply) in zip(handshake, results) {
                guard case .error(let message) = reply else { continue }
                switch command.name {
                case "AUTH": throw RedisClientError(.authenticationFailed, message)
                case "CLIENT":
                    // A NOAUTH here means the server wants a password we were not given.
                    if message.hasPrefix("NOAUTH") { throw RedisClientError(.authenticationFailed, message) }
                    connection.logger.debug("CLIENT SETNAME refused", metadata: ["error": "\(message)"])
                case "PING":
                    if message.hasPrefix("NOAUTH") { throw RedisClientError(.authenticationFailed, message) }
                    // LOADING, MASTERDOWN, BUSY…: up, but not serving now — say which.
                    let reply = RedisClientError.reply(message)
                    if reply.code == .serverUnavailable { throw reply }
                    throw RedisClientError(.connectionRefused, "server refused the connection: \(message)")
                default:
                    if message.hasPrefix("NOAUTH") { throw RedisClientError(.authenticationFailed, message) }
                    throw RedisClientError(.serverError, "\(command.name) failed: \(message)")
                }
            }
        }
        let directWrites = tls == nil
        connection.state.withLock { $0.opened(fd: fd, directWrites: directWrites) }
    }

    /// Writes `plainOut` and reads `count` replies, blocking with poll until `deadline`.
    private func blockingReplies(_ count: Int, deadline: ContinuousClock.Instant) throws -> [RESPValue] {
        var results: [RESPValue] = []
        while results.count < count {
            try flushOutput()
            while results.count < count, let event = try reader.next() {
                switch event {
                case .reply(let reply): results.append(reply)
                case .rejected(let error): throw error
                case .rejectedReplyEnded: break
                }
            }
            if results.count == count { break }
            if let closed = peerClosed {
                // Redis at maxclients says why before it closes: report that, not just the close.
                if let message = results.lazy.compactMap({ if case .error(let m) = $0 { m } else { nil } }).first {
                    throw RedisClientError(.connectionRefused, "server refused the connection: \(message)")
                }
                throw RedisClientError(.connectionClosed, "\(closed) during the handshake")
            }
            // A peer streaming bytes keeps poll busy: the deadline is checked here too.
            let events = Int16(POLLIN) | (hasOutput ? Int16(POLLOUT) : 0)
            if ContinuousClock.now >= deadline { throw RedisClientError(.connectTimeout, "no reply to the connection handshake in time") }
            if try PosixSocket.wait(fd, events: events, deadline: deadline) == 0 {
                throw RedisClientError(.connectTimeout, "no reply to the connection handshake in time")
            }
            try readAvailable(deliver: false)
        }
        return results
    }

    // MARK: the loop

    private func loop() throws {
        var pollFDs = [
            pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
            pollfd(fd: connection.wakeFD, events: Int16(POLLIN), revents: 0),
        ]
        let timeout = configuration.commandTimeout
        let busyPoll = configuration.busyPoll
        var spinUntil = ContinuousClock.now
        // Pub/sub liveness: when the server has been silent for the heartbeat, PING it; no
        // answer within the command timeout means the connection is dead.
        let heartbeat = configuration.pubSubHeartbeat
        var lastHeard = ContinuousClock.now
        var pingSentAt: ContinuousClock.Instant?
        while true {
            // Adopt new work; declare idle if there is nothing to write.
            let hadOutput = hasOutput
            // Callers may write directly only when nothing of ours is unwritten.
            let (direct, pending, closing) = connection.state.withLock { $0.takeWork(hasOutput: hadOutput) }
            if !direct.isEmpty || !pending.isEmpty {
                if let depth = connection.instrumentation?.pipelineDepth {
                    // Each direct write was one caller's; the queued ones go out together.
                    for entry in direct { depth.record(max(entry.replies, 1)) }
                    if !pending.isEmpty { depth.record(pending.reduce(0) { $0 + max($1.replies, 1) }) }
                }
                for entry in direct {
                    inFlight.append(InFlight(id: entry.id, remaining: entry.replies, deadline: entry.sentAt.advanced(by: timeout)))
                }
                let deadline = ContinuousClock.now.advanced(by: timeout)
                for request in pending {
                    plainOut.append(contentsOf: request.bytes)
                    if request.replies > 0 {
                        inFlight.append(InFlight(id: request.id, remaining: request.replies, deadline: deadline))
                    }
                }
            }
            if closing && ((inFlight.isEmpty && !hasOutput) || connection.state.withLock({ $0.hasFailed })) { return }
            if hasOutput {
                try flushOutput()
                let hasOutput = self.hasOutput
                // Work queued while we wrote saw a busy thread and sent no wake: take it now.
                let moreQueued = connection.state.withLock { $0.finishedWriting(hasOutput: hasOutput) }
                if moreQueued { continue }
            }

            let waitMs: Int32
            if case .commands = connection.mode {
                // Commands written directly by callers are adopted after poll returns, so
                // never sleep longer than one timeout: their deadlines are checked then.
                let until = inFlight.first?.deadline ?? ContinuousClock.now.advanced(by: timeout)
                waitMs = PosixSocket.milliseconds(until: until)
            } else {
                waitMs = PosixSocket.milliseconds(until: pingSentAt.map { $0.advanced(by: timeout) } ?? lastHeard.advanced(by: heartbeat))
            }
            pollFDs[0].events = Int16(POLLIN) | (hasOutput ? Int16(POLLOUT) : 0)
            pollFDs[0].revents = 0
            pollFDs[1].revents = 0
            var rc: Int32 = 0
            // Busy polling (opt-in): recently active, so look again without sleeping; a
            // sleeping thread on an idle CPU can take tens of µs to wake for the reply. Only
            // while few replies are awaited: with many callers the connection is
            // throughput-bound and the spinning core is better left to them.
            while busyPoll > .zero && rc == 0 && inFlight.count <= Self.busyPollMaximumInFlight && ContinuousClock.now < spinUntil {
                rc = poll(&pollFDs, 2, 0)
            }
            if rc == 0 { rc = poll(&pollFDs, 2, waitMs) }
            if rc > 0 && busyPoll > .zero { spinUntil = ContinuousClock.now.advanced(by: busyPoll) }
            if rc < 0 && errno != EINTR {
                throw RedisClientError(.connectionClosed, "poll: \(PosixSocket.errnoString())")
            }
            // Drain before clearing the flag: a wake signalled after the drain leaves a byte
            // behind (a spurious wake later), never a set flag with an empty pipe.
            if pollFDs[1].revents != 0 { connection.drainWake() }
            // Adopt direct writes now: their replies may be in the bytes we are about to read.
            let direct2 = connection.state.withLock { $0.wokeUp() }
            for entry in direct2 {
                connection.instrumentation?.pipelineDepth.record(max(entry.replies, 1))
                inFlight.append(InFlight(id: entry.id, remaining: entry.replies, deadline: entry.sentAt.advanced(by: timeout)))
            }
            if pollFDs[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                lastHeard = .now
                pingSentAt = nil
                try readAvailable(deliver: true)
                // Replies that came with the close were delivered; the rest fail with it.
                if let closed = peerClosed { throw RedisClientError(.connectionClosed, closed) }
            }
            if case .commands = connection.mode {
                if let first = inFlight.first, first.deadline <= .now {
                    throw RedisClientError(
                        .commandTimeout,
                        "no reply within \(timeout) (\(inFlight.count) command(s) in flight); connection replaced")
                }
            } else if let sent = pingSentAt {
                if sent.advanced(by: timeout) <= .now {
                    throw RedisClientError(.commandTimeout, "the pub/sub connection did not answer a PING within \(timeout)")
                }
            } else if lastHeard.advanced(by: heartbeat) <= .now {
                plainOut.append(contentsOf: Self.ping)
                pingSentAt = .now
            }
        }
    }

    static let ping = RedisCommand("PING").encoded

    private func deliverReplies() throws {
        if case .push(let handler) = connection.mode {
            while let event = try reader.next() {
                switch event {
                case .reply(let reply): handler(reply)
                case .rejected(let error):
                    connection.logger.warning("pub/sub message dropped", metadata: ["error": "\(error.message)"])
                case .rejectedReplyEnded: break
                }
            }
            return
        }
        var completed: [(id: UInt64, value: RESPValue)] = []
        while let event = try reader.next() {
            let reply: RESPValue
            switch event {
            case .reply(let value): reply = value
            case .rejected(let error):
                // Answer the caller now; the rest of its reply is skipped under its deadline.
                guard let head = inFlight.first else { throw error }
                if !head.rejected {
                    _ = inFlight.modifyFirst { head -> Void? in head.rejected = true; head.collected = []; return nil }
                    if let waiter = connection.state.withLock({ $0.cancel(head.id) }) { waiter.resume(throwing: error) }
                }
                continue
            case .rejectedReplyEnded: reply = .null
            }
            // Mutated in place: a batch's replies accumulate without copying the array.
            let done = inFlight.modifyFirst { head -> (UInt64, RESPValue)? in
                guard head.isBatch else { return (head.id, reply) }
                if !head.rejected { head.collected.append(reply) }
                head.remaining -= 1
                return head.remaining == 0 ? (head.id, head.rejected ? .null : .array(head.collected)) : nil
            }
            guard let done else {
                throw RedisClientError(.protocolError, "unsolicited reply from server: \(reply)")
            }
            if let done {
                // A rejected request's waiter is gone: completing it only retires it.
                completed.append(done)
                inFlight.removeFirst()
            }
        }
        if completed.isEmpty { return }
        let resumptions = connection.state.withLock { $0.complete(completed) }
        for (continuation, value) in resumptions { continuation.resume(returning: value) }
    }

    typealias Continuation = RedisConnection.Continuation

    // MARK: non-blocking socket I/O

    func flushOutput() throws {
        if let tls {
            while true {
                try sendCiphertext()
                if cipherOffset < cipherOut.count { return }  // socket full
                if plainOffset >= plainOut.count {
                    plainOut.removeAll(keepingCapacity: true)
                    plainOffset = 0
                    return
                }
                let taken = try plainOut.withUnsafeBytes { raw in
                    try tls.encrypt(UnsafeRawBufferPointer(rebasing: raw[plainOffset...]), into: &cipherOut)
                }
                plainOffset += taken
                if taken == 0 && cipherOut.isEmpty { return }
            }
        } else {
            try sendNonBlocking(plainOut, from: &plainOffset)
            if plainOffset >= plainOut.count {
                plainOut.removeAll(keepingCapacity: true)
                plainOffset = 0
            } else if plainOffset > 1 << 20 {
                plainOut.removeFirst(plainOffset)
                plainOffset = 0
            }
        }
    }

    private func sendCiphertext() throws {
        try sendNonBlocking(cipherOut, from: &cipherOffset)
        if cipherOffset >= cipherOut.count {
            cipherOut.removeAll(keepingCapacity: true)
            cipherOffset = 0
        }
    }

    /// Sends `buffer[offset...]` until done or the socket buffer is full; advances `offset`.
    private func sendNonBlocking(_ buffer: [UInt8], from offset: inout Int) throws {
        while offset < buffer.count {
            let start = offset
            let sent = buffer.withUnsafeBytes { raw in
                send(fd, raw.baseAddress! + start, raw.count - start, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if sent > 0 { offset += sent; continue }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return }
            throw RedisClientError(.connectionClosed, "write failed: \(PosixSocket.errnoString())")
        }
    }

    /// The peer closed (or reset) the connection, and how; what it sent before is still
    /// decoded and delivered.
    var peerClosed: String?

    /// Reads what the socket has, up to 16 buffers (then returns, so the caller checks its
    /// deadlines even while a peer streams without pause). With `deliver`, replies are handed
    /// out after each buffer, so the reader never holds more than one partial reply.
    func readAvailable(deliver: Bool) throws {
        for _ in 0..<16 {
            let count = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count > 0 {
                try readBuffer.withUnsafeBytes { raw in
                    let chunk = UnsafeRawBufferPointer(rebasing: raw[..<count])
                    if let tls {
                        try tls.decrypt(chunk, scratch: &scratch, ciphertext: &cipherOut) { plain in
                            try reader.feed(plain)
                        }
                    } else {
                        try reader.feed(chunk)
                    }
                }
                if deliver { try deliverReplies() }
                if count < readBuffer.count { return }
                continue
            }
            if count == 0 {
                peerClosed = "server closed the connection"
                return
            }
            if errno == EINTR { continue }
            if errno == ECONNRESET {
                peerClosed = "server reset the connection"
                return
            }
            if errno == EAGAIN || errno == EWOULDBLOCK { return }
            throw RedisClientError(.connectionClosed, "read failed: \(PosixSocket.errnoString())")
        }
    }
}
