import InMemoryTracing
import Logging
import Testing
import ToolOpsCore
import ToolOpsObserve
import Tracing

@Suite("Observe: JSON logs and redaction")
struct LoggingTests {
    let search = try! ToolID("github:search")

    @Test func secretKeysAreHiddenAtAnyDepthWhateverTheirCase() throws {
        let redaction = Redaction()
        let arguments = try JSONValue(parsing: #"""
            {"query": "swift", "Password": "p1", "nested": {"API-KEY": "k1", "list": [{"Authorization": "Bearer t"}, {"db_password": "p2"}]},
             "headers": {"Cookie": "c", "x-access-token": "t2"}, "private_key": "-----BEGIN", "count": 3}
            """#)
        let redacted = redaction.redact(arguments)
        let text = try redacted.canonicalString()
        for secret in ["p1", "k1", "Bearer t", "p2", "\"c\"", "t2", "BEGIN"] { #expect(!text.contains(secret), "\(secret) leaked: \(text)") }
        #expect(redacted["query"] == "swift")
        #expect(redacted["count"] == 3)
        #expect(redacted["Password"] == .string(Redaction.placeholder))
        #expect(redacted["nested"]?["API-KEY"] == .string(Redaction.placeholder))
    }

    @Test func metadataIsRedactedDeeplyToo() {
        let redaction = Redaction(adding: ["ssn"])
        let metadata: Logger.Metadata = [
            "user": .dictionary(["name": "ann", "SSN": "123", "auth": .array([.dictionary(["Token": "t"])])]),
            "Secret": "s",
        ]
        let redacted = redaction.redact(metadata)
        #expect(redacted["Secret"] == .string(Redaction.placeholder))
        guard case .dictionary(let user) = redacted["user"] else { Issue.record("user is gone"); return }
        #expect(user["name"] == "ann")
        #expect(user["SSN"] == .string(Redaction.placeholder))
        #expect(user["auth"] == .array([.dictionary(["Token": .string(Redaction.placeholder)])]))
    }

    @Test func aLineIsOneJSONObjectWithTheDocumentedFields() throws {
        let lines = LineCollector()
        var logger = Logger(label: "toolops.test") { label in JSONLogHandler(label: label, level: .debug, sink: lines.sink) }
        logger[metadataKey: "replica"] = "r1"
        logger.debug("hello \"world\"\n\tnext", metadata: ["request": .dictionary(["token": "abc", "path": "/x"]), "n": .stringConvertible(3)])

        let line = try #require(try lines.parsed().first)
        #expect(line["level"] == "debug")
        #expect(line["label"] == "toolops.test")
        #expect(line["message"] == "hello \"world\"\n\tnext")
        #expect(line["source"] == "ToolOpsObserveTests")
        let timestamp = try #require(line["timestamp"]?.stringValue)
        #expect(timestamp.count == 27 && timestamp.hasSuffix("Z") && timestamp.dropFirst(10).hasPrefix("T"), "\(timestamp)")
        #expect(line["metadata"]?["replica"] == "r1")
        #expect(line["metadata"]?["n"] == "3")
        #expect(line["metadata"]?["request"]?["path"] == "/x")
        #expect(line["metadata"]?["request"]?["token"] == .string(Redaction.placeholder))
        #expect(!lines.raw[0].contains("abc"))
        #expect(lines.raw[0].filter { $0 == "\n" }.count == 1)
    }

    @Test func completedCallLinesCarryTheSpansTraceIDs() async throws {
        let lines = LineCollector()
        let tracer = InMemoryTracer()
        // What OTel.makeLoggingMetadataProvider() does for its own spans, for the in-memory tracer.
        let provider = Logger.MetadataProvider {
            guard let span = ServiceContext.current?.inMemorySpanContext else { return [:] }
            return ["trace_id": .string(span.traceID), "span_id": .string(span.spanID)]
        }
        let logger = Logger(label: "toolops.calls") { label in JSONLogHandler(label: label, sink: lines.sink, metadataProvider: provider) }
        let observe = Observability(.init(tracer: tracer, logger: logger))
        let pipeline = ToolPipeline(runner: echo) { observe.middleware }
        _ = try await pipeline.run(ToolCall(id: "c-7", tool: search, arguments: ["password": "hunter2", "q": "x"]))

        let span = try #require(tracer.finishedSpans.first)
        let line = try #require(try lines.parsed().first)
        #expect(line["message"] == "tool call")
        #expect(line["trace_id"] == .string(span.traceID))
        #expect(line["span_id"] == .string(span.spanID))
        #expect(line["metadata"]?["tool"] == "github:search")
        #expect(line["metadata"]?["outcome"] == "ok")
        #expect(line["metadata"]?["call_id"] == "c-7")
        #expect(line["metadata"]?["duration_ms"]?.stringValue.flatMap(Double.init).map { $0 >= 0 } == true)
        #expect(line["metadata"]?["arguments"] == nil)  // not logged unless enabled
        #expect(!lines.raw[0].contains("hunter2"))
    }

    @Test func argumentsAreLoggedOnlyWhenEnabledAndThenRedacted() async throws {
        let lines = LineCollector()
        let logger = Logger(label: "toolops.calls") { label in JSONLogHandler(label: label, sink: lines.sink) }
        let observe = Observability(.init(logger: logger, logArguments: true))
        let pipeline = ToolPipeline(runner: echo) { observe.middleware }
        _ = try await pipeline.run(ToolCall(tool: search, arguments: ["q": "swift", "auth": ["Api_Key": "k-123"]]))
        await #expect(throws: ToolFailure.self) { try await pipeline.run(ToolCall(tool: search, arguments: ["fail": true])) }

        let parsed = try lines.parsed()
        #expect(parsed.count == 2)
        #expect(parsed[0]["metadata"]?["arguments"]?["q"] == "swift")
        #expect(parsed[0]["metadata"]?["arguments"]?["auth"]?["Api_Key"] == .string(Redaction.placeholder))
        #expect(!lines.raw.joined().contains("k-123"))
        #expect(parsed[1]["level"] == "warning")
        #expect(parsed[1]["metadata"]?["outcome"] == "error")
        #expect(parsed[1]["metadata"]?["error"] == "the tool failed")
    }

    /// Escaping checks eight bytes at a time: a character that needs it must be found at any
    /// offset, inside or after the first words, and next to multi-byte characters.
    @Test func charactersNeedingEscapesAreFoundAtEveryOffset() throws {
        let lines = LineCollector()
        let logger = Logger(label: "x") { label in JSONLogHandler(label: label, sink: lines.sink) }
        var expected: [String] = []
        for special in ["\"", "\\", "\n", "\u{1}", "\u{1F}", "\u{7F}", "é"] {
            for offset in 0..<40 {
                let message = String(repeating: "a", count: offset) + special + String(repeating: "b", count: offset % 9)
                expected.append(message)
                logger.info("\(message)")
            }
        }
        let parsed = try lines.parsed()
        #expect(parsed.map { $0["message"]?.stringValue ?? "?" } == expected)
    }

    @Test func controlCharactersAndNonASCIIAreWrittenAsValidJSON() throws {
        let lines = LineCollector()
        let logger = Logger(label: "x") { label in JSONLogHandler(label: label, sink: lines.sink) }
        logger.info("bell\u{7} nul\u{0} é 東京 \u{1F600} del\u{7F}")
        let line = try #require(try lines.parsed().first)
        #expect(line["message"] == "bell\u{7} nul\u{0} é 東京 \u{1F600} del\u{7F}")
    }
}
