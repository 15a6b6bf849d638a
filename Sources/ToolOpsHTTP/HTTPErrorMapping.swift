import Hummingbird
import HTTPTypes
import NIOCore
import ToolOpsCore
import ToolOpsResilience

/// How a failed call is answered over HTTP: one status per ``ToolOpsError/Code``, a JSON body
/// with the code's stable name, and the headers a client needs to behave.
///
/// | code | status | headers |
/// |---|---|---|
/// | `invalid_input` (bad JSON, arguments, tenant) | 400 | |
/// | `unauthenticated` | 401 | `WWW-Authenticate` |
/// | `forbidden` | 403 | |
/// | `tool_not_found` | 404 | |
/// | `payload_too_large` | 413 | |
/// | `rate_limited` | 429 | `Retry-After`, `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` |
/// | `circuit_open`, `bulkhead_full` | 503 | `Retry-After` |
/// | `store_unavailable` (a fail-closed store while Redis is down), `authentication_unavailable` | 503 | `Retry-After` |
/// | `timed_out` | 504 | |
/// | `tool_failed`, `retries_exhausted`, `cached_failure` (the tool's own failure) | 502 | |
/// | `invalid_configuration` | 500 | |
///
/// `retries_exhausted` wrapping a ToolOps refusal (a breaker that opened during retries) is
/// answered as that refusal. Messages are ToolOps' own (they never carry a credential); a
/// tool's own error is not echoed, only its type.
public enum HTTPErrorMapping {
    /// A request body over the limit.
    public struct PayloadTooLarge: Error, Sendable {
        public var limit: Int
    }

    public struct Mapped: Sendable {
        public var status: HTTPResponse.Status
        public var code: String
        public var message: String
        public var headers: HTTPFields
        public var retryAfter: Duration?

        public init(status: HTTPResponse.Status, code: String, message: String, headers: HTTPFields = [:], retryAfter: Duration? = nil) {
            self.status = status
            self.code = code
            self.message = message
            self.headers = headers
            self.retryAfter = retryAfter
        }

        /// The JSON error response.
        public func response(callID: String?) -> Response {
            var error: [String: JSONValue] = ["code": .string(code), "message": .string(message)]
            if let callID { error["callId"] = .string(callID) }
            if let retryAfter { error["retryAfterSeconds"] = .number(Double(retryAfter.nanosecondsClamped) / 1e9) }
            return ToolRoutes.json(status, ["error": .object(error)], headers: headers)
        }
    }

    public static func map(_ error: any Error, challenge: String = #"Bearer realm="toolops""#) -> Mapped {
        if let tooLarge = error as? PayloadTooLarge {
            return Mapped(
                status: .contentTooLarge, code: "payload_too_large", message: "the body exceeds \(tooLarge.limit) bytes", headers: [:], retryAfter: nil)
        }
        guard let error = error as? ToolOpsError else {
            if error is CancellationError {
                return Mapped(status: .serviceUnavailable, code: "cancelled", message: "the call was cancelled", headers: [:], retryAfter: nil)
            }
            return Mapped(status: .badGateway, code: "tool_failed", message: "the tool failed (\(type(of: error)))", headers: [:], retryAfter: nil)
        }
        var headers: HTTPFields = [:]
        let status: HTTPResponse.Status
        switch error.code {
        case .invalidInput: status = .badRequest
        case .unauthenticated:
            status = .unauthorized
            headers[.wwwAuthenticate] = challenge
        case .forbidden: status = .forbidden
        case .toolNotFound: status = .notFound
        case .rateLimited:
            status = .tooManyRequests
            if let refusal = error.underlying as? RateLimitRefusal {
                headers[rateLimitLimit] = String(refusal.limit.burst)
                headers[rateLimitRemaining] = String(max(0, refusal.decision.remaining))
                headers[rateLimitReset] = String(wholeSeconds(refusal.decision.resetAfter))
            }
        case .circuitOpen, .bulkheadFull, .storeUnavailable, .authenticationUnavailable: status = .serviceUnavailable
        case .timedOut: status = .gatewayTimeout
        case .retriesExhausted:
            if let inner = error.underlying as? ToolOpsError, inner.code != .toolFailed { return map(inner, challenge: challenge) }
            status = .badGateway
        case .toolFailed, .cachedFailure: status = .badGateway
        default: status = .internalServerError
        }
        var retryAfter = error.retryAfter
        if retryAfter == nil, status == .serviceUnavailable { retryAfter = .seconds(1) }
        if let retryAfter, status == .tooManyRequests || status == .serviceUnavailable {
            headers[.retryAfter] = String(wholeSeconds(retryAfter))
        }
        return Mapped(status: status, code: error.code.name, message: error.message, headers: headers, retryAfter: retryAfter)
    }

    /// Seconds rounded up, at least 1 (a client told `0` would retry at once).
    static func wholeSeconds(_ duration: Duration) -> Int64 {
        let nanoseconds = max(0, duration.nanosecondsClamped)
        return max(1, (nanoseconds + 999_999_999) / 1_000_000_000)
    }

    static let rateLimitLimit = HTTPField.Name("RateLimit-Limit")!
    static let rateLimitRemaining = HTTPField.Name("RateLimit-Remaining")!
    static let rateLimitReset = HTTPField.Name("RateLimit-Reset")!
}
