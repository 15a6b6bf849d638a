import Testing
import ToolOpsAuth
import ToolOpsCore

@Suite("RBAC")
struct RBACTests {
    static let policy = try! RBACPolicy(
        roles: [
            "reader": .init(allow: [.init("*:search"), .init("*:get_*")]),
            "developer": .init(inherits: ["reader"], allow: [.init("github:*")], deny: [.init("github:delete_*")]),
            "admin": .init(allow: [.init("*")]),
            "no-payments": .init(deny: [.init("pay*:*")]),
            "invalidator": .init(allow: [.init("cache:*", actions: ["invalidate"])]),
            // A cycle: each counts once, and both grant what either does.
            "ping": .init(inherits: ["pong"], allow: [.init("net:ping")]),
            "pong": .init(inherits: ["ping"], allow: [.init("net:pong")]),
        ],
        defaultRole: "reader",
        scopes: ["tools.write": [.init("jira:create_*")]])

    static let cases: [(roles: [String], scopes: [String], tool: String, action: String, allowed: Bool)] = [
        (["reader"], [], "github:search", "call", true),
        (["reader"], [], "jira:get_issue", "call", true),
        (["reader"], [], "github:create_issue", "call", false),
        // Inheritance: a developer reads, and may use github — but never delete there.
        (["developer"], [], "jira:search", "call", true),
        (["developer"], [], "github:create_issue", "call", true),
        (["developer"], [], "github:delete_repo", "call", false),
        // Deny overrides allow across roles: admin allows everything, no-payments denies.
        (["admin"], [], "payments:refund", "call", true),
        (["admin", "no-payments"], [], "payments:refund", "call", false),
        (["no-payments", "admin"], [], "paypal:send", "call", false),
        (["admin", "no-payments"], [], "github:delete_repo", "call", true),
        // The developer's deny holds even when admin allows it too.
        (["admin", "developer"], [], "github:delete_repo", "call", false),
        // Actions.
        (["invalidator"], [], "cache:search", "invalidate", true),
        (["invalidator"], [], "cache:search", "call", false),
        (["reader"], [], "github:search", "invalidate", true),  // a rule without actions covers them all
        // Cycles.
        (["ping"], [], "net:pong", "call", true),
        (["pong"], [], "net:ping", "call", true),
        // Default role, unknown roles, scopes.
        ([], [], "github:search", "call", true),
        ([], [], "github:create_issue", "call", false),
        (["ghost"], [], "github:search", "call", false),  // roles given: no default, and ghost grants nothing
        (["ghost"], ["tools.write"], "jira:create_issue", "call", true),
        (["reader"], ["tools.write"], "jira:delete_issue", "call", false),
        (["reader"], ["unknown.scope"], "jira:create_issue", "call", false),
    ]

    @Test(arguments: cases.indices)
    func decides(_ index: Int) async throws {
        let item = Self.cases[index]
        let authorizer = RBACAuthorizer(Self.policy)
        let identity = Identity(principal: "p", roles: item.roles, scopes: item.scopes, method: .jwt)
        let decision = await authorizer.authorize(identity, tool: try ToolID(item.tool), action: item.action)
        #expect(decision.allowed == item.allowed, "\(item.roles) \(item.scopes) \(item.action) \(item.tool): \(decision)")
    }

    @Test func reasonsNameTheRoleAndRule() throws {
        let authorizer = RBACAuthorizer(Self.policy)
        let denied = authorizer.decide(Identity(principal: "p", roles: ["developer"], method: .jwt), tool: try ToolID("github:delete_repo"), action: "call")
        #expect(denied.reason.description == "denied by role developer (github:delete_*)")
        let allowed = authorizer.decide(Identity(principal: "p", roles: ["developer"], method: .jwt), tool: try ToolID("jira:search"), action: "call")
        #expect(allowed.reason.description == "allowed by role reader (*:search)")
    }

    @Test func policiesWithUndefinedRolesAreRefused() {
        #expect(throws: ToolOpsError.self) { try RBACPolicy(roles: ["a": .init(inherits: ["b"])]) }
        #expect(throws: ToolOpsError.self) { try RBACPolicy(roles: ["a": .init()], defaultRole: "b") }
    }

    @Test(arguments: [
        ("*", "any:thing", true), ("github:*", "github:search", true), ("github:*", "gitlab:search", false),
        ("git*:search", "github:search", true), ("git*:search", "gitlab:search", true), ("git*:search", "github:searches", false),
        ("github:list_*", "github:list_repos", true), ("github:list_*", "github:list_", true), ("github:list_*", "github:lis", false),
        ("*:read_*", "s3:read_object", true), ("*:*_admin", "iam:user_admin", true), ("*:*_admin", "iam:admin_user", false),
        ("a*b*c:x", "aXXbYYc:x", true), ("a*b*c:x", "aXXbYY:x", false), ("*hub:*", "github:x", true),
    ])
    func globsMatchWithinSegments(pattern: String, tool: String, matches: Bool) throws {
        #expect(try ToolGlob(pattern).matches(try ToolID(tool)) == matches)
    }

    @Test func malformedGlobsAreRefused() {
        for text in ["github", "github:", ":x", "a:b:c", ""] {
            #expect(throws: ToolOpsError.self, "\(text)") { try ToolGlob(text) }
        }
    }
}
