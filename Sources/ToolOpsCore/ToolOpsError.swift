/// An error raised by ToolOps itself (as opposed to the tool). Callers and the HTTP layer
/// map ``code`` to a response; ``retryAfter`` carries the back-off hint where one exists.
///
/// ```swift
/// do { result = try await pipeline.run(call) }
/// catch let error as ToolOpsError where error.code == .rateLimited {
///     print("retry in \(error.retryAfter ?? .zero)")
/// }
/// ```
public struct ToolOpsError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as an extensible set of codes.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let rawName: String
        init(name: String) { self.rawName = name }
        /// Arguments, tool id or configuration were malformed.
        public static let invalidInput = Code(name: "invalid_input")
        /// A rate limit refused the call; ``ToolOpsError/retryAfter`` says when to try again.
        public static let rateLimited = Code(name: "rate_limited")
        /// A circuit breaker is open; ``ToolOpsError/retryAfter`` is when it will admit probes.
        public static let circuitOpen = Code(name: "circuit_open")
        /// The bulkhead had no free slot within its wait time.
        public static let bulkheadFull = Code(name: "bulkhead_full")
        /// The call exceeded its timeout and was cancelled.
        public static let timedOut = Code(name: "timed_out")
        /// Every retry failed; ``ToolOpsError/attempts`` and ``ToolOpsError/underlying`` tell how.
        public static let retriesExhausted = Code(name: "retries_exhausted")
        /// A configuration value was rejected at construction.
        public static let invalidConfiguration = Code(name: "invalid_configuration")
        /// A state store (memory, file, Redis) failed.
        public static let storeUnavailable = Code(name: "store_unavailable")
        /// The tool failed recently and the cache holds that failure (opt-in negative caching).
        public static let cachedFailure = Code(name: "cached_failure")
        /// The caller could not be authenticated: no credentials, or credentials that are
        /// invalid, expired, not yet valid or inactive (HTTP 401).
        public static let unauthenticated = Code(name: "unauthenticated")
        /// The caller is authenticated but not allowed to do this (HTTP 403).
        public static let forbidden = Code(name: "forbidden")
        /// Whoever vouches for credentials (a key store, a JWKS or introspection endpoint) could
        /// not be asked: the credentials were neither accepted nor refused (HTTP 503).
        public static let authenticationUnavailable = Code(name: "authentication_unavailable")
        /// No tool is registered under the id (HTTP 404).
        public static let toolNotFound = Code(name: "tool_not_found")
        /// The tool itself failed (its error is ``ToolOpsError/underlying``; HTTP 502).
        public static let toolFailed = Code(name: "tool_failed")
        /// The code's name, stable across releases (`rate_limited`, `circuit_open`, …): what
        /// clients match on.
        public var name: String { rawName }
        public var description: String { name }
    }

    public var code: Code
    public var message: String
    /// When the caller may try again (rate limited, circuit open).
    public var retryAfter: Duration?
    /// Attempts made (retries exhausted).
    public var attempts: Int?
    /// The error behind this one (the last attempt's error, a store failure).
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, retryAfter: Duration? = nil, attempts: Int? = nil, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
        self.attempts = attempts
        self.underlying = underlying
    }

    public var description: String {
        var text = "ToolOpsError(\(code)): \(message)"
        if let retryAfter { text += " (retry after \(retryAfter))" }
        if let underlying { text += " — \(underlying)" }
        return text
    }
}

package func requireConfiguration(_ condition: Bool, _ message: @autoclosure () -> String) throws(ToolOpsError) {
    if !condition { throw ToolOpsError(.invalidConfiguration, message()) }
}
