import Testing
import ToolOpsCore

@Suite("ToolID and patterns", .timeLimit(.minutes(1)))
struct ToolIDTests {
    @Test func parsesNamespaceAndName() throws {
        let id = try ToolID("github:create_issue")
        #expect(id.namespace == "github" && id.name == "create_issue")
        #expect(id.description == "github:create_issue")
        #expect(try ToolID("a.b-c:x_1.2").name == "x_1.2")
    }

    @Test(arguments: [
        ("nocolon", "must be namespace:name"),
        (":name", "namespace is empty"),
        ("ns:", "name is empty"),
        ("ns:na me", "invalid character at position 3"),
        ("ns:a:b", "invalid character at position 2"),
        ("_ns:x", "invalid character at position 1"),
        ("ns:" + String(repeating: "x", count: 65), "longer than 64"),
        ("ns:naïve", "invalid character"),
    ])
    func rejectsBadIDs(text: String, problem: String) {
        let error = #expect(throws: ToolOpsError.self) { try ToolID(text) }
        #expect(error?.code == .invalidInput)
        #expect(error?.message.contains(problem) == true, "\(error?.message ?? "")")
    }

    @Test func patterns() throws {
        let id = try ToolID("github:search")
        #expect(ToolPattern.any.matches(id))
        #expect(try ToolPattern("github:*").matches(id))
        #expect(try !ToolPattern("gitlab:*").matches(id))
        #expect(try ToolPattern("github:search").matches(id))
        #expect(try !ToolPattern("github:create").matches(id))
        #expect(try ToolPattern("github:search").specificity > ToolPattern("github:*").specificity)
        #expect(throws: ToolOpsError.self) { try ToolPattern("bad pattern") }
    }
}
