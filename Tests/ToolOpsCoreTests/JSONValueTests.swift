import Testing
import ToolOpsCore

@Suite("JSONValue parsing and canonical encoding", .timeLimit(.minutes(1)))
struct JSONValueTests {
    func canonical(_ text: String) throws -> String { try JSONValue(parsing: text).canonicalString() }

    @Test func sortsKeysAndDropsWhitespace() throws {
        #expect(try canonical(#" { "b" : [1, 2.50, true, null], "a" : {"z": "x", "y": {}} } "#)
            == #"{"a":{"y":{},"z":"x"},"b":[1,2.5,true,null]}"#)
    }

    @Test func equivalentDocumentsEncodeIdentically() throws {
        let a = try JSONValue(parsing: #"{"x": 1.0, "y": [1e2, -0.0], "s": "caf\u00e9"}"#)
        let b = try JSONValue(parsing: #"{"s":"café","y":[100,0],"x":1}"#)
        #expect(try a.canonicalEncoding() == b.canonicalEncoding())
    }

    @Test func numbers() throws {
        #expect(try canonical("[0, -7, 9223372036854775807, 1.5e-7, 12345678901234567890]")
            == "[0,-7,9223372036854775807,1.5e-07,1.2345678901234567e+19]")
        #expect(try JSONValue.number(3.0).canonicalString() == "3")
        #expect(throws: ToolOpsError.self) { try JSONValue.number(.nan).canonicalEncoding() }
        #expect(throws: ToolOpsError.self) { try JSONValue(parsing: "1e400") }
    }

    @Test func stringsAndEscapes() throws {
        #expect(try canonical(#""a\"b\\c\/d\n\t\u0001\ud83d\ude00""#) == "\"a\\\"b\\\\c/d\\n\\t\\u0001😀\"")
        #expect(try JSONValue(parsing: #""\u00e9""#) == .string("é"))
    }

    @Test(arguments: [
        ("", "unexpected end"),
        ("{", "expected a string key"),
        (#"{"a":1,}"#, "expected a string key"),
        (#"{"a" 1}"#, "expected ':'"),
        ("[1,2", "unterminated array"),
        ("01", "leading zero"),
        ("1.", "digits expected"),
        ("tru", "expected 'true'"),
        (#""abc"#, "unterminated string"),
        (#""\x""#, "invalid escape"),
        (#""\ud83d""#, "unpaired surrogate"),
        (#"{"a":1,"a":2}"#, "duplicate key 'a'"),
        ("[1] x", "trailing characters"),
        ("\"a\u{01}\"", "control character"),
    ])
    func malformedInputIsAClearError(text: String, problem: String) {
        let error = #expect(throws: ToolOpsError.self) { try JSONValue(parsing: text) }
        #expect(error?.code == .invalidInput)
        #expect(error?.message.contains(problem) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("at byte") == true)
    }

    @Test func limits() throws {
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        let error = #expect(throws: ToolOpsError.self) { try JSONValue(parsing: deep) }
        #expect(error?.message.contains("nesting deeper than 64") == true)
        // Allowed deeper, the same text parses to 65 nested arrays (and encodes back to itself).
        var value = try #require(try? JSONValue(parsing: deep, limits: .init(maximumDepth: 100)))
        var depth = 0
        while case .array(let items) = value, let first = items.first { depth += 1; value = first }
        #expect(depth == 64 && value == .array([]))
        #expect(try JSONValue(parsing: deep, limits: .init(maximumDepth: 100)).canonicalEncoding() == Array(deep.utf8))
        let big = "\"" + String(repeating: "x", count: 100) + "\""
        #expect(throws: ToolOpsError.self) { try JSONValue(parsing: big, limits: .init(maximumBytes: 50)) }
    }

    @Test func invalidUTF8IsRejected() {
        #expect(throws: ToolOpsError.self) { try JSONValue(parsing: [34, 0xC3, 0x28, 34]) }
    }
}
