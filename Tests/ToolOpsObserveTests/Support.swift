import Logging
import Synchronization
import Testing
import ToolOpsCore
import ToolOpsObserve

/// Log lines written to a ``JSONLogSink``, parsed back.
final class LineCollector: Sendable {
    private let lines = Mutex<[[UInt8]]>([])

    var sink: JSONLogSink { JSONLogSink { [self] line in lines.withLock { $0.append(line) } } }

    var raw: [String] { lines.withLock { $0.map { String(decoding: $0, as: UTF8.self) } } }

    /// Every line as JSON (a line that does not parse fails the caller).
    func parsed() throws -> [JSONValue] {
        try lines.withLock { $0 }.map { line in
            #expect(line.last == UInt8(ascii: "\n"))
            return try JSONValue(parsing: Array(line.dropLast()))
        }
    }
}

struct ToolFailure: Error, CustomStringConvertible {
    var description: String { "the tool failed" }
}

/// A tool that answers `["ok": true]`, or fails when the arguments say `"fail": true`.
let echo = ToolFunction { call in
    if call.arguments["fail"] == .bool(true) { throw ToolFailure() }
    return ToolResult(["ok": true])
}
