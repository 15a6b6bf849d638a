import Logging
import Synchronization

/// A message received on a subscribed channel.
public struct RedisPubSubMessage: Sendable, Hashable {
    /// The channel the message was published to.
    public var channel: String
    /// The pattern that matched, for pattern subscriptions.
    public var pattern: String?
    /// The payload, binary-safe.
    public var payload: [UInt8]

    /// The payload decoded as UTF-8.
    public var text: String { String(decoding: payload, as: UTF8.self) }
}

/// What a subscription yields.
public enum RedisPubSubEvent: Sendable, Hashable {
    /// A published message.
    case message(RedisPubSubMessage)
    /// The pub/sub connection broke. Messages published from now until ``restored`` are
    /// lost (pub/sub has no replay); consumers that keep derived state (a near cache, for
    /// instance) should stop trusting it.
    case connectionLost(RedisClientError)
    /// The client reconnected and every channel and pattern is subscribed again.
    case restored
}

/// An `AsyncSequence` of events for the channels and patterns it was created for.
/// Ending the iteration (or dropping the sequence) unsubscribes.
public struct RedisSubscription: AsyncSequence, Sendable {
    public typealias Element = RedisPubSubEvent
    let stream: AsyncStream<RedisPubSubEvent>

    public func makeAsyncIterator() -> AsyncStream<RedisPubSubEvent>.Iterator { stream.makeAsyncIterator() }

    /// Only the messages, skipping connection events.
    public var messages: AsyncCompactMapSequence<AsyncStream<RedisPubSubEvent>, RedisPubSubMessage> {
        stream.compactMap { event in
            if case .message(let message) = event { return message }
            return nil
        }
    }
}

/// A subscription delivered to a handler; ``cancel()`` unsubscribes.
public struct RedisSubscriptionHandle: Sendable {
    let cancelAction: @Sendable () -> Void
    init(cancel: @escaping @Sendable () -> Void) { cancelAction = cancel }
    public func cancel() { cancelAction() }
}

/// When a subscription's buffer overflows: signal the loss at the first drop, and again only
/// after enough events that the earlier signal may itself have been pushed out.
final class Overflow: Sendable {
    private let yieldsSinceSignal: Mutex<Int?> = Mutex(nil)
    private let capacity: Int
    init(capacity: Int) { self.capacity = capacity }

    func shouldSignal() -> Bool {
        yieldsSinceSignal.withLock { count in
            if let current = count, current < capacity / 2 {
                count = current + 1
                return false
            }
            count = 0
            return true
        }
    }
}

/// Pub/sub on one dedicated connection, shared by all subscriptions of a client.
/// Reconnects with backoff after a failure and restores every subscription.
final class RedisSubscriber: Sendable {
    typealias StreamContinuation = AsyncStream<RedisPubSubEvent>.Continuation

    /// Where a subscriber's events go: an `AsyncStream`, or a handler called on the
    /// connection's I/O thread (lowest latency; the handler must be quick).
    struct Sink: Sendable {
        let yield: @Sendable (RedisPubSubEvent) -> Void
        let finish: @Sendable () -> Void
    }

    struct Subscriber {
        var channels: [String]
        var patterns: [String]
        var sink: Sink
    }

    struct State {
        var connection: RedisConnection?
        var open = false
        var subscribers: [UInt64: Subscriber] = [:]
        var nextID: UInt64 = 1
        /// Subscriber counts per channel and pattern, to send (P)SUBSCRIBE/(P)UNSUBSCRIBE once.
        var channels: [String: Int] = [:]
        var patterns: [String: Int] = [:]
        /// Confirmation groups waiting for "c:name" / "p:name".
        var confirmations: [String: [UInt64]] = [:]
        /// A subscribe call waiting for its remaining confirmations.
        var groups: [UInt64: (Int, CheckedContinuation<Void, any Error>)] = [:]
        var failures = 0
        var lost = false
        var restorePending: Set<String> = []
        var closed = false
    }

    let configuration: RedisConfiguration
    let tls: TLSContext?
    let logger: Logger
    let makeID: @Sendable () -> Int
    let instrumentation: RedisInstrumentation?
    let state = Mutex(State())
    /// Where the next pub/sub connection goes (a cluster's nodes in turn, Sentinel's master).
    let endpoint: @Sendable () throws(RedisClientError) -> RedisConfiguration.Endpoint

    init(
        configuration: RedisConfiguration, tls: TLSContext?, logger: Logger, instrumentation: RedisInstrumentation? = nil,
        makeID: @escaping @Sendable () -> Int,
        endpoint: (@Sendable () throws(RedisClientError) -> RedisConfiguration.Endpoint)? = nil
    ) {
        let fixed = configuration.endpoint
        self.endpoint = endpoint ?? { fixed }
        self.instrumentation = instrumentation
        self.configuration = configuration
        self.tls = tls
        self.logger = logger
        self.makeID = makeID
    }

    func subscribe(channels: [String], patterns: [String]) async throws -> RedisSubscription {
        let capacity = configuration.maximumBufferedPubSubEvents
        let (stream, continuation) = AsyncStream<RedisPubSubEvent>.makeStream(bufferingPolicy: .bufferingNewest(capacity))
        let id = makeSubscriberID()
        continuation.onTermination = { [weak self] _ in self?.remove(id) }
        let overflow = Overflow(capacity: capacity)
        let sink = Sink(yield: { event in
            // A consumer this far behind has lost the oldest events: say so, as for a gap in
            // the channel (events still buffered come first, so derived state is dropped after them).
            if case .dropped = continuation.yield(event), overflow.shouldSignal() {
                continuation.yield(.connectionLost(RedisClientError(
                    .overloaded, "the subscription's consumer fell behind by \(capacity) events; the oldest were dropped")))
                continuation.yield(.restored)
            }
        }, finish: { continuation.finish() })
        try await subscribe(id: id, channels: channels, patterns: patterns, sink: sink)
        return RedisSubscription(stream: stream)
    }

    func subscribe(
        channels: [String], patterns: [String], handler: @escaping @Sendable (RedisPubSubEvent) -> Void
    ) async throws -> RedisSubscriptionHandle {
        let id = makeSubscriberID()
        try await subscribe(id: id, channels: channels, patterns: patterns, sink: Sink(yield: handler, finish: {}))
        return RedisSubscriptionHandle(cancel: { [weak self] in self?.remove(id) })
    }

    /// Ends a subscribe call's wait with `error` (if it is still waiting).
    private func failGroup(_ group: UInt64, _ error: any Error) {
        let waiter = state.withLock { $0.groups.removeValue(forKey: group)?.1 }
        waiter?.resume(throwing: error)
    }

    private func makeSubscriberID() -> UInt64 {
        state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
    }

    private func subscribe(id: UInt64, channels: [String], patterns: [String], sink: Sink) async throws {
        do {
            // The confirmation wait ends on confirmation, connection failure, cancellation, or
            // after the connect + command timeouts: a subscribe never hangs.
            let group = makeSubscriberID()
            let limit = configuration.connectTimeout + configuration.commandTimeout
            // The timer is a child task: cancelled and awaited as soon as the wait ends.
            try await withThrowingTaskGroup(of: Void.self) { timer in
                timer.addTask { [weak self] in
                    do { try await Task.sleep(for: limit) } catch { return }
                    self?.failGroup(group, RedisClientError(.commandTimeout, "no SUBSCRIBE confirmation within \(limit)"))
                }
                defer { timer.cancelAll() }
                try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Void, any Error>) in
                    // Register, and write (P)SUBSCRIBE under the same lock, so a concurrent
                    // unsubscribe of the same channel cannot be written after our subscribe.
                    let outcome: Result<Bool, RedisClientError> = state.withLock { state in
                        if state.closed { return .failure(RedisClientError(.clientClosed, "the Redis client was shut down")) }
                        if Task.isCancelled { return .failure(RedisClientError(.clientClosed, "cancelled")) }
                        state.subscribers[id] = Subscriber(channels: channels, patterns: patterns, sink: sink)
                        var newChannels: [String] = []
                        var newPatterns: [String] = []
                        for channel in Set(channels) {
                            state.channels[channel, default: 0] += 1
                            if state.channels[channel] == 1 { newChannels.append(channel) }
                        }
                        for pattern in Set(patterns) {
                            state.patterns[pattern, default: 0] += 1
                            if state.patterns[pattern] == 1 { newPatterns.append(pattern) }
                        }
                        let keys = newChannels.map { "c:" + $0 } + newPatterns.map { "p:" + $0 }
                        if keys.isEmpty { return .success(true) }
                        do {
                            let connection = try state.connection ?? startConnection(&state, delay: .zero)
                            state.groups[group] = (keys.count, waiter)
                            for key in keys { state.confirmations[key, default: []].append(group) }
                            do {
                                if !newChannels.isEmpty { try connection.write(RedisCommand("SUBSCRIBE", arguments: newChannels).encoded) }
                                if !newPatterns.isEmpty { try connection.write(RedisCommand("PSUBSCRIBE", arguments: newPatterns).encoded) }
                            } catch {
                                state.groups[group] = nil
                                return .failure((error as? RedisClientError) ?? RedisClientError(.connectionClosed, "\(error)"))
                            }
                            return .success(false)
                        } catch {
                            return .failure((error as? RedisClientError) ?? RedisClientError(.connectionRefused, "\(error)"))
                        }
                    }
                    switch outcome {
                    case .success(true): waiter.resume()
                    case .success(false): break
                    case .failure(let error): waiter.resume(throwing: error)
                    }
                }
                } onCancel: {
                    failGroup(group, CancellationError())
                }
            }
        } catch {
            remove(id)
            sink.finish()
            throw error
        }
    }

    private func remove(_ id: UInt64) {
        state.withLock { state in
            guard let subscriber = state.subscribers.removeValue(forKey: id) else { return }
            var goneChannels: [String] = []
            var gonePatterns: [String] = []
            for channel in Set(subscriber.channels) {
                state.channels[channel, default: 1] -= 1
                if state.channels[channel] == 0 { state.channels[channel] = nil; goneChannels.append(channel) }
            }
            for pattern in Set(subscriber.patterns) {
                state.patterns[pattern, default: 1] -= 1
                if state.patterns[pattern] == 0 { state.patterns[pattern] = nil; gonePatterns.append(pattern) }
            }
            // Written under our lock, so it is ordered with any later SUBSCRIBE.
            guard state.open, let connection = state.connection else { return }
            if !goneChannels.isEmpty { try? connection.write(RedisCommand("UNSUBSCRIBE", arguments: goneChannels).encoded) }
            if !gonePatterns.isEmpty { try? connection.write(RedisCommand("PUNSUBSCRIBE", arguments: gonePatterns).encoded) }
        }
    }

    private func startConnection(_ state: inout State, delay: Duration) throws(RedisClientError) -> RedisConnection {
        let id = makeID()
        var configuration = self.configuration
        configuration.endpoint = try endpoint()
        let connection = try RedisConnection(
            id: id, configuration: configuration, tls: tls, logger: logger,
            mode: .push({ [weak self] reply in self?.handle(reply) }),
            connectDelay: delay, instrumentation: instrumentation,
            onOpen: { [weak self] in self?.opened(id: id) },
            onClose: { [weak self] error in self?.closed(id: id, error: error) }
        )
        state.connection = connection
        state.open = false
        return connection
    }

    private func opened(id: Int) {
        state.withLock { state in
            guard state.connection?.id == id, let connection = state.connection else { return }
            state.open = true
            guard state.lost else { return }
            // Reconnected: subscribe to everything again; `restored` follows the confirmations.
            let channels = Array(state.channels.keys)
            let patterns = Array(state.patterns.keys)
            state.restorePending = Set(channels.map { "c:" + $0 } + patterns.map { "p:" + $0 })
            if state.restorePending.isEmpty { state.lost = false }
            if !channels.isEmpty { try? connection.write(RedisCommand("SUBSCRIBE", arguments: channels).encoded) }
            if !patterns.isEmpty { try? connection.write(RedisCommand("PSUBSCRIBE", arguments: patterns).encoded) }
        }
    }

    private func closed(id: Int, error: RedisClientError) {
        let (waiters, continuations) = state.withLock { state -> ([CheckedContinuation<Void, any Error>], [Sink]) in
            guard state.connection?.id == id else { return ([], []) }
            state.connection = nil
            state.open = false
            let waiters = state.groups.values.map(\.1)
            state.groups.removeAll()
            state.confirmations.removeAll()
            if state.closed {
                return (waiters, [])
            }
            var notify: [Sink] = []
            if !state.lost {
                state.lost = true
                notify = state.subscribers.values.map(\.sink)
            }
            if !state.subscribers.isEmpty {
                state.failures += 1
                let delay = configuration.reconnect.delay(afterFailures: state.failures)
                // If even that fails (out of threads or descriptors), the subscribers stay lost
                // until the client's service or the next subscribe() opens one.
                do {
                    _ = try startConnection(&state, delay: delay)
                } catch {
                    logger.error("redis pub/sub connection cannot be reopened", metadata: ["error": "\(error)"])
                }
            }
            return (waiters, notify)
        }
        for waiter in waiters { waiter.resume(throwing: error) }
        for sink in continuations { sink.yield(.connectionLost(error)) }
        if !continuations.isEmpty {
            logger.warning("redis pub/sub connection lost; resubscribing", metadata: ["error": "\(error)"])
        }
    }

    private func handle(_ reply: RESPValue) {
        if case .error(let message) = reply {
            refused(message)
            return
        }
        guard case .array(let items) = reply, let kind = items.first?.string else { return }
        switch kind {
        case "message" where items.count == 3:
            guard let channel = items[1].string, let payload = items[2].bytes else { return }
            let message = RedisPubSubMessage(channel: channel, pattern: nil, payload: payload)
            let targets = state.withLock { state in
                state.subscribers.values.filter { $0.channels.contains(channel) }.map(\.sink)
            }
            for target in targets { target.yield(.message(message)) }
        case "pmessage" where items.count == 4:
            guard let pattern = items[1].string, let channel = items[2].string, let payload = items[3].bytes else { return }
            let message = RedisPubSubMessage(channel: channel, pattern: pattern, payload: payload)
            let targets = state.withLock { state in
                state.subscribers.values.filter { $0.patterns.contains(pattern) }.map(\.sink)
            }
            for target in targets { target.yield(.message(message)) }
        case "subscribe", "psubscribe":
            guard items.count >= 2, let name = items[1].string else { return }
            let key = (kind == "subscribe" ? "c:" : "p:") + name
            let (waiters, restored) = state.withLock { state -> ([CheckedContinuation<Void, any Error>], [Sink]) in
                var waiters: [CheckedContinuation<Void, any Error>] = []
                for group in state.confirmations.removeValue(forKey: key) ?? [] {
                    guard var entry = state.groups[group] else { continue }
                    entry.0 -= 1
                    if entry.0 == 0 {
                        state.groups[group] = nil
                        waiters.append(entry.1)
                    } else {
                        state.groups[group] = entry
                    }
                }
                guard state.lost, state.restorePending.remove(key) != nil else { return (waiters, []) }
                if state.restorePending.isEmpty {
                    state.failures = 0  // a working connection: the next outage starts its backoff afresh
                    state.lost = false
                    return (waiters, state.subscribers.values.map(\.sink))
                }
                return (waiters, [])
            }
            for waiter in waiters { waiter.resume() }
            for sink in restored { sink.yield(.restored) }
        default:
            break
        }
    }

    /// An error reply: (P)SUBSCRIBE refused (an ACL without the channel answers `NOPERM`). It
    /// answers the oldest subscribe call still waiting (replies come in the order commands
    /// were written, and calls write in the order of their ids); that call throws it.
    private func refused(_ message: String) {
        let error = RedisClientError.reply(message)
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard let oldest = state.groups.keys.min(), let entry = state.groups.removeValue(forKey: oldest) else { return nil }
            for key in state.confirmations.keys {
                state.confirmations[key]?.removeAll { $0 == oldest }
                if state.confirmations[key]?.isEmpty == true { state.confirmations[key] = nil }
            }
            return entry.1
        }
        if let waiter {
            waiter.resume(throwing: error)
        } else {
            // Resubscribing after a reconnect was refused: the subscriptions stay lost.
            logger.error("redis refused a pub/sub subscription", metadata: ["error": "\(message)"])
        }
    }

    /// Opens the pub/sub connection again if it could not be opened after a failure (out of
    /// threads or descriptors then) while subscriptions remain. Called periodically by the
    /// client's service.
    func reviveIfNeeded() {
        state.withLock { state in
            guard !state.closed, state.connection == nil, !state.subscribers.isEmpty else { return }
            do {
                _ = try startConnection(&state, delay: .zero)
            } catch {
                logger.error("redis pub/sub connection cannot be opened", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The pub/sub connection is closed (after ``shutdown()``) or was never opened.
    var isIdle: Bool { state.withLock { $0.connection == nil || $0.connection?.isClosed == true } }

    func shutdown() {
        let (connection, continuations) = state.withLock { state -> (RedisConnection?, [Sink]) in
            state.closed = true
            defer { state.subscribers.removeAll() }
            return (state.connection, state.subscribers.values.map(\.sink))
        }
        for sink in continuations { sink.finish() }
        connection?.close()
    }
}
