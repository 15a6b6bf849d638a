import Tracing
import ServiceContextModule
import ToolOpsCore

/// Authenticates the caller from the credentials the transport put in the call's context,
/// authorizes the call, records the decision, and passes the call on with its identity.
///
/// ```swift
/// let auth = AuthMiddleware(.init(
///     authenticator: CompositeAuthenticator([apiKeys, jwt]),
///     authorizer: RBACAuthorizer(policy),
///     audit: LogAuditSink()))
/// let pipeline = ToolPipeline(runner: tools) { observe.middleware; auth; limiter; … }
/// ```
///
/// - Credentials come from ``ServiceContext/authCredentials`` (the HTTP layer fills it from
///   the request's headers) and are removed from the context passed on.
/// - The identity goes into ``ServiceContext/authIdentity``; its principal into
///   `toolIdentity` and its tenant (when it has one) into `toolTenant`, replacing whatever the
///   caller claimed — so per-identity and per-tenant rate limits (`PolicyKey.identity`,
///   `.tenant`) key on who was authenticated.
/// - Failures are ``ToolOpsError``s: `unauthenticated` (missing, invalid, expired, not yet
///   valid, inactive credentials), `authenticationUnavailable` (the provider could not be
///   asked), `forbidden` (authenticated, not allowed). None carries a credential.
public struct AuthMiddleware: ToolMiddleware {
    public struct Configuration: Sendable {
        public var authenticator: any Authenticator
        /// `nil`: every authenticated caller may call every tool.
        public var authorizer: (any Authorizer)?
        /// The action checked for a tool call. Defaults to `call`.
        public var action: String
        /// Callers without credentials proceed as ``Identity/anonymous`` (and are then
        /// authorized like anyone else) instead of being refused. Defaults to `false`.
        public var allowAnonymous: Bool
        /// Where decisions go. Defaults to ``LogAuditSink``.
        public var audit: (any AuditSink)?

        public init(
            authenticator: any Authenticator, authorizer: (any Authorizer)? = nil, action: String = "call", allowAnonymous: Bool = false,
            audit: (any AuditSink)? = LogAuditSink()
        ) {
            self.authenticator = authenticator
            self.authorizer = authorizer
            self.action = action
            self.allowAnonymous = allowAnonymous
            self.audit = audit
        }
    }

    public let configuration: Configuration
    let clock: any ToolOpsClock

    /// - Parameter clock: the wall clock audit entries are stamped with. Defaults to ``WallClock``.
    public init(_ configuration: Configuration, clock: any ToolOpsClock = WallClock()) {
        self.configuration = configuration
        self.clock = clock
    }

    public func run(_ call: ToolCall, next: any ToolRunner) async throws -> ToolResult {
        var context = call.context
        let credentials = context.authCredentials ?? AuthCredentials()
        context.authCredentials = nil
        let identity: Identity
        do throws(AuthError) {
            if let found = try await configuration.authenticator.authenticate(credentials) {
                identity = found
            } else if configuration.allowAnonymous {
                identity = .anonymous
            } else {
                throw AuthError(.missingCredentials, "no credentials")
            }
        } catch {
            audit(call, identity: nil, allowed: false, reason: "\(error.reason): \(error.message)")
            throw error.toolOpsError
        }
        context.authIdentity = identity
        context.toolIdentity = identity.principal
        if let tenant = identity.tenant { context.toolTenant = tenant }
        if let authorizer = configuration.authorizer {
            let decision = await authorizer.authorize(identity, tool: call.tool, action: configuration.action)
            audit(call, identity: identity, allowed: decision.allowed, reason: decision.reason.description)
            guard decision.allowed else {
                throw ToolOpsError(.forbidden, "\(identity.principal) may not \(configuration.action) \(call.tool): \(decision.reason)")
            }
        } else {
            audit(call, identity: identity, allowed: true, reason: "authenticated (no authorizer)")
        }
        var inner = call
        inner.context = context
        return try await next.run(inner)
    }

    private func audit(_ call: ToolCall, identity: Identity?, allowed: Bool, reason: @autoclosure () -> String) {
        guard let sink = configuration.audit else { return }
        sink.record(
            AuditEntry(
                allowed: allowed, principal: identity?.principal, tenant: identity?.tenant ?? call.tenant, method: identity?.method, tool: call.tool,
                action: configuration.action, reason: reason(), callID: call.id, traceID: Self.traceID(of: call.context), at: clock.now))
    }

    /// The W3C trace id of `context`, as the bootstrapped instrument would propagate it.
    static func traceID(of context: ServiceContext) -> String? {
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: DictionaryInjector())
        guard let parent = carrier["traceparent"] else { return nil }
        let fields = parent.split(separator: "-")
        guard fields.count >= 2, fields[1].count == 32 else { return nil }
        return String(fields[1])
    }
}

struct DictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}
