import Testing
@testable import ToolOpsCore

@Suite("Argument schemas", .timeLimit(.minutes(1)))
struct ArgumentSchemaTests {
    static let schema: JSONValue = [
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": [
            "name": ["type": "string", "minLength": 1, "maxLength": 5],
            "count": ["type": "integer", "minimum": 0, "maximum": 10],
            "mode": ["enum": ["fast", "slow"]],
            "tags": ["type": "array", "maxItems": 2, "items": ["type": "string"]],
            "ratio": ["type": ["number", "null"]],
            "nested": ["type": "object", "properties": ["flag": ["type": "boolean"]]],
        ],
    ]

    /// Each case: arguments, and the problem reported (nil: valid).
    static let cases: [(JSONValue, String?)] = [
        (["name": "ab"], nil),
        (["name": "abcde", "count": 10, "mode": "slow", "tags": ["x", "y"], "ratio": nil, "nested": ["flag": true]], nil),
        (["name": "ab", "count": 2.0, "ratio": 0.5], nil),
        ([:], "arguments.name is required"),
        (["name": ""], "arguments.name is shorter than 1 characters"),
        (["name": "abcdef"], "arguments.name is longer than 5 characters"),
        (["name": 3], "arguments.name must be a string, got an integer"),
        (["name": "a", "count": -1], "arguments.count is below 0"),
        (["name": "a", "count": 11], "arguments.count is above 10"),
        (["name": "a", "count": 1.5], "arguments.count must be an integer, got a number"),
        (["name": "a", "mode": "medium"], "arguments.mode must be one of the listed values"),
        (["name": "a", "tags": ["x", "y", "z"]], "arguments.tags has more than 2 items"),
        (["name": "a", "tags": ["x", 1]], "arguments.tags[1] must be a string, got an integer"),
        (["name": "a", "ratio": "half"], "arguments.ratio must be a number or null, got a string"),
        (["name": "a", "nested": ["flag": "yes"]], "arguments.nested.flag must be a boolean, got a string"),
        (["name": "a", "extra": 1], "arguments.extra is not an accepted argument"),
        // Members are reported in name order, whatever order the object holds them in.
        (["name": "a", "count": 99, "zzz": 1, "aaa": 1], "arguments.aaa is not an accepted argument"),
        ("text", "arguments must be an object, got a string"),
    ]

    @Test(arguments: cases.indices)
    func reportsTheFirstProblemOrNone(_ index: Int) {
        let (arguments, problem) = Self.cases[index]
        do {
            try ArgumentSchema.validate(arguments, against: Self.schema)
            #expect(problem == nil, "accepted \(arguments)")
        } catch {
            #expect(error.code == .invalidInput)
            #expect(error.message == problem)
        }
    }

    /// The quick first pass must agree with the reporting pass on every case, or a bad call
    /// would slip through (or a good one be refused with no message).
    @Test(arguments: cases.indices)
    func theQuickPassAgreesWithTheReport(_ index: Int) {
        let (arguments, _) = Self.cases[index]
        let reported: Bool
        do {
            try ArgumentSchema.report(arguments, against: Self.schema, path: "arguments")
            reported = false
        } catch {
            reported = true
        }
        #expect(ArgumentSchema.conforms(arguments, to: Self.schema) == !reported)
    }
}
