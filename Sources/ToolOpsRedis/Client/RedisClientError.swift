/// An error from the Redis client.
///
/// Errors fall into two families that callers treat differently:
///
/// - **Redis unavailable** (``isUnavailable`` is `true`): the server could not be reached or
///   the connection broke — refused, reset, closed, timed out, TLS failure, protocol garbage.
///   The command may or may not have run. Resilience code may fail open or fall back.
/// - **Redis said no** (``isUnavailable`` is `false`): the server answered with an error
///   reply, or refused our credentials. Redis is up; falling back would hide a bug.
///
/// ```swift
/// do {
///     _ = try await client.send("GET", "k")
/// } catch let error as RedisClientError where error.isUnavailable {
///     // use the fallback store
/// }
/// ```
public struct RedisClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, as an extensible set of codes.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: String, Hashable, Sendable {
            case invalidURL, invalidConfiguration, connectionRefused, connectionClosed
            case connectTimeout, commandTimeout, tlsFailure, protocolError, serverError
            case authenticationFailed, clientClosed, unexpectedReply, addressResolution, serverUnavailable
            case commandTooLarge, connectionScopedCommand, overloaded, tlsVerificationFailed, crossSlot
        }
        let base: Base

        /// The URL could not be parsed; the message names the offending part.
        public static let invalidURL = Code(base: .invalidURL)
        /// A configuration value is out of range (for example a pool size of 0).
        public static let invalidConfiguration = Code(base: .invalidConfiguration)
        /// The server refused the connection or was unreachable.
        public static let connectionRefused = Code(base: .connectionRefused)
        /// An established connection was closed or reset.
        public static let connectionClosed = Code(base: .connectionClosed)
        /// Connecting (TCP, TLS handshake, AUTH, SELECT) took longer than the connect timeout.
        public static let connectTimeout = Code(base: .connectTimeout)
        /// A reply did not arrive within the command timeout; the connection was replaced.
        public static let commandTimeout = Code(base: .commandTimeout)
        /// The TLS handshake or a TLS record failed (other than certificate verification).
        public static let tlsFailure = Code(base: .tlsFailure)
        /// The server's certificate did not verify (an unknown CA, a name that does not match,
        /// an expired certificate — or someone in the middle). Not "unavailable": the fallback
        /// stores do not quietly take over; commands fail, the client logs it as an error, and
        /// the Redis health check reports `unhealthy`.
        public static let tlsVerificationFailed = Code(base: .tlsVerificationFailed)
        /// The server sent bytes that are not valid RESP2, or a reply exceeded the size limit.
        public static let protocolError = Code(base: .protocolError)
        /// The server replied with an error (`-ERR …`, `-WRONGTYPE …`, `-NOSCRIPT …`).
        public static let serverError = Code(base: .serverError)
        /// The server answered, but cannot serve this now — it is a replica (`READONLY`, e.g.
        /// the old primary after a failover), loading its data (`LOADING`), busy with a script
        /// (`BUSY`), cut off from its primary (`MASTERDOWN`), or its cluster is reconfiguring
        /// (`TRYAGAIN`, `CLUSTERDOWN`). Unavailable, not "Redis said no".
        public static let serverUnavailable = Code(base: .serverUnavailable)
        /// `AUTH` was rejected (wrong password, unknown user) or the server requires one.
        public static let authenticationFailed = Code(base: .authenticationFailed)
        /// The client was shut down.
        public static let clientClosed = Code(base: .clientClosed)
        /// A reply had a shape the API did not expect (for example a string where an integer was needed).
        public static let unexpectedReply = Code(base: .unexpectedReply)
        /// The host name could not be resolved.
        public static let addressResolution = Code(base: .addressResolution)
        /// A command's arguments exceed ``RedisCommand/maximumBytes``; nothing was sent.
        public static let commandTooLarge = Code(base: .commandTooLarge)
        /// A command that changes or holds its connection (`MULTI`, `WATCH`, `SELECT`,
        /// `CLIENT REPLY`, `SUBSCRIBE`, `BLPOP`, …) was sent on the shared connections; nothing
        /// was sent. Run it in ``RedisClient/withConnection(commandTimeout:_:)``.
        public static let connectionScopedCommand = Code(base: .connectionScopedCommand)
        /// The client's own bounds were reached: every connection has
        /// ``RedisConfiguration/maximumCommandsPerConnection`` commands waiting, or
        /// ``RedisConfiguration/maximumLeasedConnections`` leases are open. Nothing was sent.
        /// Counted as unavailable: a Redis this far behind is not serving in time.
        public static let overloaded = Code(base: .overloaded)
        /// The keys of one command or script hash to different Redis Cluster slots (see
        /// ``RedisSlot``); the message names them. Nothing was sent.
        public static let crossSlot = Code(base: .crossSlot)

        public var description: String { base.rawValue }
    }

    /// The kind of failure.
    public var code: Code
    /// A human-readable explanation (for ``Code/serverError``, the server's error line).
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `true` when Redis could not be reached or the connection broke (as opposed to Redis
    /// answering with an error). See the type's documentation.
    public var isUnavailable: Bool {
        switch code.base {
        case .connectionRefused, .connectionClosed, .connectTimeout, .commandTimeout,
            .tlsFailure, .protocolError, .addressResolution, .clientClosed, .serverUnavailable, .overloaded:
            return true
        case .invalidURL, .invalidConfiguration, .serverError, .authenticationFailed, .unexpectedReply, .commandTooLarge,
            .connectionScopedCommand, .tlsVerificationFailed, .crossSlot:
            return false
        }
    }

    /// For a ``Code/serverError``, the first word of the server's message (`ERR`,
    /// `WRONGTYPE`, `NOSCRIPT`, `MOVED`, …); otherwise `nil`.
    public var serverErrorPrefix: Substring? {
        guard code == .serverError || code == .serverUnavailable else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }

    public var description: String { "RedisClientError(\(code)): \(message)" }

    /// Error-reply prefixes that mean "not available for this right now" (see
    /// ``Code/serverUnavailable``).
    public static let unavailablePrefixes: Set<Substring> = ["READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"]

    /// The error for an error reply: ``Code/serverUnavailable`` for the prefixes in
    /// ``unavailablePrefixes``, else ``Code/serverError``.
    public static func reply(_ message: String) -> RedisClientError {
        let prefix = message.split(separator: " ", maxSplits: 1).first ?? ""
        return RedisClientError(unavailablePrefixes.contains(prefix) ? .serverUnavailable : .serverError, message)
    }
}
