/// Runs tool calls: the tool itself, or a middleware chain ending in it.
public protocol ToolRunner: Sendable {
    func run(_ call: ToolCall) async throws -> ToolResult
}

/// Wraps a call: do something before and/or after `next`, or answer without calling it.
///
/// ```swift
/// struct Tagging: ToolMiddleware {
///     func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
///         var result = try await next.run(call)
///         result.metadata["seen-by"] = "tagging"
///         return result
///     }
/// }
/// ```
public protocol ToolMiddleware: Sendable {
    func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult
}

/// A tool from a closure.
public struct ToolFunction: ToolRunner {
    let body: @Sendable (ToolCall) async throws -> ToolResult
    public init(_ body: @escaping @Sendable (ToolCall) async throws -> ToolResult) { self.body = body }
    public func run(_ call: ToolCall) async throws -> ToolResult { try await body(call) }
}

/// A runner made of middlewares around a tool runner. The first middleware listed is the
/// outermost. A middleware left out (through `if`, or an optional that is `nil`) is not in
/// the chain at all, so a disabled feature costs nothing.
///
/// ```swift
/// let pipeline = try ToolPipeline(runner: tools) {
///     try RateLimitMiddleware(limiterConfiguration)
///     if cachingEnabled { CacheMiddleware(cache) }
///     RetryMiddleware(retry)
///     CircuitBreakerMiddleware(breaker)
///     BulkheadMiddleware(bulkhead)
///     TimeoutMiddleware(timeout)
/// }
/// let result = try await pipeline.run(call)
/// ```
///
/// Recommended order, outermost first: observe → auth → rate limit → cache → retry →
/// circuit breaker → bulkhead → timeout → tool. Cache hits are observed, authorised and
/// counted against rate limits but cost no breaker or bulkhead slot; every retry attempt is
/// judged by the breaker (an open breaker ends retrying), takes a bulkhead slot only while it
/// runs (never during back-off sleeps) and has its own timeout.
public struct ToolPipeline: ToolRunner {
    let head: any ToolRunner
    /// The middlewares in the chain, outermost first.
    public let middlewares: [any ToolMiddleware]

    /// Builds the chain; middlewares whose initialisers validate (and throw) can be listed
    /// with `try`, and the pipeline then needs `try` too.
    public init(runner: any ToolRunner, @ToolMiddlewareBuilder _ middlewares: () throws -> [any ToolMiddleware]) rethrows {
        self.init(runner: runner, middlewares: try middlewares())
    }

    public init(runner: any ToolRunner, middlewares: [any ToolMiddleware]) {
        var head = runner
        for middleware in middlewares.reversed() { head = MiddlewareRunner(middleware: middleware, next: head) }
        self.head = head
        self.middlewares = middlewares
    }

    public func run(_ call: ToolCall) async throws -> ToolResult { try await head.run(call) }
}

struct MiddlewareRunner: ToolRunner {
    let middleware: any ToolMiddleware
    let next: any ToolRunner
    func run(_ call: ToolCall) async throws -> ToolResult { try await middleware.run(call, next: next) }
}

/// Builds the middleware list of a ``ToolPipeline``.
@resultBuilder
public enum ToolMiddlewareBuilder {
    public static func buildExpression(_ middleware: any ToolMiddleware) -> [any ToolMiddleware] { [middleware] }
    /// An optional middleware: `nil` means switched off, and it is left out.
    public static func buildExpression(_ middleware: (any ToolMiddleware)?) -> [any ToolMiddleware] {
        middleware.map { [$0] } ?? []
    }
    public static func buildExpression(_ middlewares: [any ToolMiddleware]) -> [any ToolMiddleware] { middlewares }
    public static func buildBlock(_ parts: [any ToolMiddleware]...) -> [any ToolMiddleware] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [any ToolMiddleware]?) -> [any ToolMiddleware] { part ?? [] }
    public static func buildEither(first part: [any ToolMiddleware]) -> [any ToolMiddleware] { part }
    public static func buildEither(second part: [any ToolMiddleware]) -> [any ToolMiddleware] { part }
    public static func buildArray(_ parts: [[any ToolMiddleware]]) -> [any ToolMiddleware] { parts.flatMap { $0 } }
}
