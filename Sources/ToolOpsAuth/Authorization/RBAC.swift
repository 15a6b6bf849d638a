import Synchronization
import ToolOpsCore

/// Roles and what they may do, for ``RBACAuthorizer``.
///
/// ```swift
/// let policy = try RBACPolicy(
///     roles: [
///         "reader": .init(allow: [.init("*:search"), .init("*:get_*")]),
///         "developer": .init(inherits: ["reader"], allow: [.init("github:*")], deny: [.init("github:delete_*")]),
///         "admin": .init(allow: [.init("*")]),
///     ],
///     defaultRole: "reader",
///     scopes: ["tools.read": [.init("*:get_*")]])
/// ```
public struct RBACPolicy: Sendable {
    /// Tools (a ``ToolGlob``) and actions (empty: every action).
    public struct Rule: Sendable, Hashable, CustomStringConvertible {
        public var tools: ToolGlob
        public var actions: Set<String>

        public init(tools: ToolGlob, actions: Set<String> = []) {
            self.tools = tools
            self.actions = actions
        }

        /// A rule from a pattern text; traps on a malformed literal (use ``init(tools:actions:)``
        /// with `try ToolGlob(text)` for input).
        public init(_ pattern: StaticString, actions: Set<String> = []) {
            do { self.tools = try ToolGlob("\(pattern)") } catch { preconditionFailure("\(error)") }
            self.actions = actions
        }

        func matches(_ tool: ToolID, _ action: String) -> Bool {
            (actions.isEmpty || actions.contains(action) || actions.contains("*")) && tools.matches(tool)
        }

        func matches(_ namespace: UnsafeBufferPointer<UInt8>, _ name: UnsafeBufferPointer<UInt8>, _ action: String) -> Bool {
            tools.matches(namespace: namespace, name: name) && (actions.isEmpty || actions.contains(action) || actions.contains("*"))
        }

        public var description: String { actions.isEmpty ? tools.description : "\(tools) [\(actions.sorted().joined(separator: ","))]" }
    }

    public struct Role: Sendable {
        public var inherits: [String]
        public var allow: [Rule]
        public var deny: [Rule]

        public init(inherits: [String] = [], allow: [Rule] = [], deny: [Rule] = []) {
            self.inherits = inherits
            self.allow = allow
            self.deny = deny
        }
    }

    public var roles: [String: Role]
    /// The role of identities that carry none. `nil`: such identities are allowed nothing.
    public var defaultRole: String?
    /// What a token scope grants (allow rules), for identities with scopes.
    public var scopes: [String: [Rule]]

    /// Checks that every inherited role and the default role exist.
    public init(roles: [String: Role], defaultRole: String? = nil, scopes: [String: [Rule]] = [:]) throws(ToolOpsError) {
        for (name, role) in roles {
            for parent in role.inherits where roles[parent] == nil {
                throw ToolOpsError(.invalidConfiguration, "role \(name) inherits from \(parent), which is not defined")
            }
        }
        if let defaultRole, roles[defaultRole] == nil {
            throw ToolOpsError(.invalidConfiguration, "the default role \(defaultRole) is not defined")
        }
        self.roles = roles
        self.defaultRole = defaultRole
        self.scopes = scopes
    }
}

/// Whether a call may go ahead, and why (formatted only when someone reads it).
public struct AuthorizationDecision: Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable, CustomStringConvertible {
        case allowedByRole(String, RBACPolicy.Rule)
        case allowedByScope(String, RBACPolicy.Rule)
        case deniedByRole(String, RBACPolicy.Rule)
        /// No role or scope allows it (or the identity has neither).
        case notAllowed
        /// Another authorizer's words.
        case other(String)

        public var description: String {
            switch self {
            case .allowedByRole(let role, let rule): "allowed by role \(role) (\(rule))"
            case .allowedByScope(let scope, let rule): "allowed by scope \(scope) (\(rule))"
            case .deniedByRole(let role, let rule): "denied by role \(role) (\(rule))"
            case .notAllowed: "no role or scope allows it"
            case .other(let text): text
            }
        }
    }

    public var allowed: Bool
    /// For the audit trail: which role or scope allowed it, or which rule denied it.
    public var reason: Reason

    public init(allowed: Bool, reason: Reason) {
        self.allowed = allowed
        self.reason = reason
    }

    public var description: String { "\(allowed ? "allow" : "deny"): \(reason)" }
}

/// Decides whether an identity may do `action` on a tool.
public protocol Authorizer: Sendable {
    func authorize(_ identity: Identity, tool: ToolID, action: String) async -> AuthorizationDecision
}

/// Role-based access control over ``RBACPolicy``.
///
/// An identity's roles (or the default role when it has none) are expanded through
/// `inherits` (cycles are harmless: each role counts once). **Deny overrides allow**: a
/// deny rule of any of those roles that matches refuses the call, whatever else allows it.
/// Otherwise the call is allowed if an allow rule of any role, or a rule granted by one of
/// the identity's scopes, matches. Otherwise it is refused. Roles the policy does not define
/// grant nothing. Each role's expansion is computed once, when the authorizer is made.
public final class RBACAuthorizer: Authorizer {
    struct Compiled: Sendable {
        /// (role that brought it, rule), over the role and everything it inherits.
        var allow: [(role: String, rule: RBACPolicy.Rule)]
        var deny: [(role: String, rule: RBACPolicy.Rule)]
    }

    public let policy: RBACPolicy
    let compiled: [String: Compiled]

    /// Decisions already made: the policy never changes, so they stay right. Bounded: tool
    /// names can come from callers, and a full cache starts over.
    private let decisions = Mutex<[DecisionKey: AuthorizationDecision]>([:])
    static let maximumCachedDecisions = 4096

    struct DecisionKey: Hashable {
        var roles: [String]
        var scopes: [String]
        var tool: ToolID
        var action: String
    }

    public init(_ policy: RBACPolicy) {
        self.policy = policy
        var compiled: [String: Compiled] = [:]
        for name in policy.roles.keys {
            var seen: Set<String> = []
            var order: [String] = []
            var queue = [name]
            while let next = queue.first {
                queue.removeFirst()
                guard seen.insert(next).inserted, let role = policy.roles[next] else { continue }
                order.append(next)
                queue.append(contentsOf: role.inherits)
            }
            var entry = Compiled(allow: [], deny: [])
            for role in order {
                guard let definition = policy.roles[role] else { continue }
                entry.allow += definition.allow.map { (role, $0) }
                entry.deny += definition.deny.map { (role, $0) }
            }
            compiled[name] = entry
        }
        self.compiled = compiled
    }

    public func authorize(_ identity: Identity, tool: ToolID, action: String) async -> AuthorizationDecision {
        decide(identity, tool: tool, action: action)
    }

    /// ``authorize(_:tool:action:)`` without suspending.
    public func decide(_ identity: Identity, tool: ToolID, action: String) -> AuthorizationDecision {
        let key = DecisionKey(roles: identity.roles, scopes: identity.scopes, tool: tool, action: action)
        if let known = decisions.withLock({ $0[key] }) { return known }
        let decision = evaluate(identity, tool: tool, action: action)
        decisions.withLock { decisions in
            if decisions.count >= Self.maximumCachedDecisions { decisions.removeAll(keepingCapacity: true) }
            decisions[key] = decision
        }
        return decision
    }

    /// The decision worked out from the rules, without the cache (for the benchmark's worst case).
    package func evaluate(_ identity: Identity, tool: ToolID, action: String) -> AuthorizationDecision {
        // The tool's segments are read as bytes once, for every rule.
        var namespace = tool.namespace
        var name = tool.name
        return namespace.withUTF8 { namespace in
            name.withUTF8 { name in decide(identity, namespace: namespace, name: name, action: action) }
        }
    }

    private func decide(
        _ identity: Identity, namespace: UnsafeBufferPointer<UInt8>, name: UnsafeBufferPointer<UInt8>, action: String
    ) -> AuthorizationDecision {
        let roles = identity.roles.isEmpty ? (policy.defaultRole.map { [$0] } ?? []) : identity.roles
        var allowedBy: AuthorizationDecision.Reason?
        for role in roles {
            guard let entry = compiled[role] else { continue }
            for (source, rule) in entry.deny where rule.matches(namespace, name, action) {
                return AuthorizationDecision(allowed: false, reason: .deniedByRole(source, rule))
            }
            if allowedBy == nil, let (source, rule) = entry.allow.first(where: { $0.rule.matches(namespace, name, action) }) {
                allowedBy = .allowedByRole(source, rule)
            }
        }
        if let allowedBy { return AuthorizationDecision(allowed: true, reason: allowedBy) }
        for scope in identity.scopes {
            if let rule = policy.scopes[scope]?.first(where: { $0.matches(namespace, name, action) }) {
                return AuthorizationDecision(allowed: true, reason: .allowedByScope(scope, rule))
            }
        }
        return AuthorizationDecision(allowed: false, reason: .notAllowed)
    }
}
