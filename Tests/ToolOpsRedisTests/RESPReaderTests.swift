import Testing
import ToolOpsTestSupport
@testable import ToolOpsRedis

@Suite("RESP reader (bounded, incremental) and encoder", .timeLimit(.minutes(1)))
struct RESPReaderTests {
    func events(_ text: String, limits: RESPReader.Limits = .init()) throws -> [RESPReader.Event] {
        try events(Array(text.utf8), limits: limits)
    }

    func events(_ bytes: [UInt8], limits: RESPReader.Limits = .init()) throws -> [RESPReader.Event] {
        let reader = RESPReader(limits: limits)
        try reader.feed(bytes)
        var events: [RESPReader.Event] = []
        while let event = try reader.next() { events.append(event) }
        return events
    }

    func values(_ text: String) throws -> [RESPValue] {
        try events(text).map { event in
            guard case .reply(let value) = event else { throw TestFailure("unexpected \(event)") }
            return value
        }
    }

    @Test func everyReplyType() throws {
        let values = try values("+OK\r\n-ERR boom\r\n:-42\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*3\r\n:1\r\n*1\r\n$1\r\nx\r\n-ERR inner\r\n*0\r\n")
        #expect(values == [
            .simpleString("OK"), .error("ERR boom"), .integer(-42), .bulkString(Array("hello".utf8)),
            .bulkString([]), .null, .null,
            .array([.integer(1), .array([.bulkString([UInt8(ascii: "x")])]), .error("ERR inner")]),
            .array([]),
        ])
    }

    @Test func integersAtTheEdgesOfSixtyFourBits() throws {
        #expect(try values(":9223372036854775807\r\n:-9223372036854775808\r\n") == [.integer(.max), .integer(.min)])
        #expect(throws: RedisClientError.self) { try events(":9223372036854775808\r\n") }
        #expect(throws: RedisClientError.self) { try events(":12a\r\n") }
        #expect(throws: RedisClientError.self) { try events(":\r\n") }
    }

    @Test func binaryBulkStringsSurviveByteByByteFeeding() throws {
        let payload: [UInt8] = [0, 13, 10, 255, 36, 42, 0]
        let frame = Array("$7\r\n".utf8) + payload + Array("\r\n".utf8)
        let reader = RESPReader()
        var result: RESPReader.Event?
        for byte in frame {
            #expect(result == nil)
            try reader.feed([byte])
            result = try reader.next()
        }
        #expect(result == .reply(.bulkString(payload)))
    }

    @Test func encoderProducesStandardRESP() {
        let command = RedisCommand("SET", "k", [UInt8]([0, 1]), 42, 1.5)
        let expected = "*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\u{0}\u{1}\r\n$2\r\n42\r\n$3\r\n1.5\r\n"
        #expect(command.encoded == Array(expected.utf8))
        #expect(RedisCommand("PING").encoded == Array("*1\r\n$4\r\nPING\r\n".utf8))
        #expect(RedisCommand("SET", "", "").encoded == Array("*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n".utf8))
    }

    @Test func invalidTypeByteIsAProtocolError() throws {
        let reader = RESPReader()
        try reader.feed(Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8))
        #expect(throws: RedisClientError.self) { try reader.next() }
        // The reader stays failed rather than resynchronising on garbage.
        #expect(throws: RedisClientError.self) { try reader.next() }
    }

    @Test func anUnterminatedLengthLineIsAProtocolErrorOnceItIsTooLongToBeOne() throws {
        let reader = RESPReader()
        try reader.feed(Array("*".utf8) + [UInt8](repeating: UInt8(ascii: "1"), count: 20))
        #expect(try reader.next() == nil)
        try reader.feed([UInt8](repeating: UInt8(ascii: "1"), count: 20))
        let error = #expect(throws: RedisClientError.self) { try reader.next() }
        #expect(error?.code == .protocolError)
    }

    @Test func aReplyOverTheByteLimitIsSkippedWithoutBufferingAndTheNextOneDecodes() throws {
        let reader = RESPReader(limits: .init(bytes: 1024))
        try reader.feed(Array("$100000\r\n".utf8))
        guard case .rejected(let error) = try reader.next() else { throw TestFailure("not rejected at its header") }
        #expect(error.code == .protocolError)
        #expect(error.message.contains("maximumReplyBytes"))
        var events: [RESPReader.Event] = []
        for _ in 0..<100 {
            try reader.feed([UInt8](repeating: 65, count: 1000))
            while let event = try reader.next() { events.append(event) }
            #expect(reader.bufferedBytes == 0)
        }
        try reader.feed(Array("\r\n+OK\r\n".utf8))
        while let event = try reader.next() { events.append(event) }
        #expect(events == [.rejectedReplyEnded, .reply(.simpleString("OK"))])
    }

    @Test func aReplyOverTheElementLimitIsSkippedWholeEvenWhenNested() throws {
        // 2 + 2 + 2 announced elements: the third header crosses a limit of 5.
        let text = "*2\r\n*2\r\n:1\r\n:2\r\n*2\r\n:3\r\n*1\r\n:4\r\n+NEXT\r\n"
        let result = try events(text, limits: .init(elements: 5))
        #expect(result.count == 3)
        if case .rejected(let error) = result.first { #expect(error.message.contains("maximumReplyElements")) } else {
            Issue.record("expected a rejection, got \(result)")
        }
        #expect(Array(result.dropFirst()) == [.rejectedReplyEnded, .reply(.simpleString("NEXT"))])
        // Within the limit, the same reply decodes.
        #expect(try events(text, limits: .init(elements: 7)).count == 2)
    }

    @Test func nestingDeeperThanHiredisAllowedDecodesAndOnlyOurLimitRejects() throws {
        func nested(_ depth: Int) -> String { String(repeating: "*1\r\n", count: depth) + ":7\r\n+NEXT\r\n" }
        // hiredis 0.14 gave up at 7 levels.
        var expected = RESPValue.integer(7)
        for _ in 0..<40 { expected = .array([expected]) }
        #expect(try events(nested(40)) == [.reply(expected), .reply(.simpleString("NEXT"))])
        let rejected = try events(nested(9), limits: .init(depth: 8))
        #expect(rejected.count == 3)
        #expect(rejected.last == .reply(.simpleString("NEXT")))
        // An empty array counts as a level too (found by the fuzzer).
        let empty = try events("*1\r\n*0\r\n+NEXT\r\n", limits: .init(depth: 1))
        #expect(empty.count == 3)
        #expect(empty.last == .reply(.simpleString("NEXT")))
    }

    /// A peer announcing 2^31 elements and streaming small ones: the reader rejects the reply
    /// at its header and holds no more than what one feed brought, however long it streams.
    @Test func anEndlessAnnouncedArrayHoldsNoMemory() throws {
        let reader = RESPReader()
        try reader.feed(Array("*2147483648\r\n".utf8))
        guard case .rejected = try reader.next() else { throw TestFailure("not rejected at its header") }
        let chunk = Array(String(repeating: ":1\r\n", count: 16 * 1024).utf8)
        for _ in 0..<200 {
            try reader.feed(chunk)
            #expect(try reader.next() == nil)
            #expect(reader.bufferedBytes < 8)
        }
    }

    @Test func anEndlessStatusLineIsAProtocolErrorAtTheByteLimit() throws {
        let reader = RESPReader(limits: .init(bytes: 4096))
        try reader.feed(Array("+".utf8))
        var thrown: RedisClientError?
        for _ in 0..<10 where thrown == nil {
            try reader.feed([UInt8](repeating: 65, count: 1000))
            do { _ = try reader.next() } catch { thrown = error }
        }
        #expect(thrown?.code == .protocolError)
    }

    /// Random bytes — uniformly random, and biased towards RESP's own characters — never
    /// crash the reader: each input ends in events, "need more", or a protocol error.
    @Test func randomBytesNeverCrash() throws {
        var rng = SeededRandom(seed: 0x5EED)
        let alphabet = Array("+-:$*\r\n0123456789-1".utf8)
        var outcomes = (values: 0, errors: 0)
        for round in 0..<20_000 {
            let length = Int.random(in: 1...64, using: &rng)
            let bytes: [UInt8] = (0..<length).map { _ in
                round % 2 == 0 ? UInt8.random(in: 0...255, using: &rng) : alphabet.randomElement(using: &rng)!
            }
            let reader = RESPReader(limits: .init(bytes: 1024, elements: 16, depth: 4))
            do {
                try reader.feed(bytes)
                while try reader.next() != nil { outcomes.values += 1 }
            } catch {
                #expect(error.code == .protocolError)
                outcomes.errors += 1
            }
        }
        // Both paths were exercised.
        #expect(outcomes.values > 100)
        #expect(outcomes.errors > 100)
    }

    /// Differential: random valid replies, cut at random points, decode to what they encode,
    /// and agree with hiredis' reader where hiredis can read them (7 levels or fewer).
    @Test func randomRepliesSplitAnywhereDecodeLikeHiredis() throws {
        var rng = SeededRandom(seed: 0xD1FF)
        for _ in 0..<2_000 {
            let values = (0..<Int.random(in: 1...4, using: &rng)).map { _ in RESPValue.random(depth: 0, using: &rng) }
            let wire = values.flatMap(\.encodedForTest)
            let reader = RESPReader()
            var decoded: [RESPValue] = []
            var offset = 0
            while offset < wire.count {
                let end = min(wire.count, offset + Int.random(in: 1...64, using: &rng))
                try reader.feed(Array(wire[offset..<end]))
                while let event = try reader.next() {
                    guard case .reply(let value) = event else { throw TestFailure("unexpected \(event)") }
                    decoded.append(value)
                }
                offset = end
            }
            #expect(decoded == values)
            #expect(try HiredisReference.decode(wire) == values)
        }
    }
}

extension RESPValue {
    static func random(depth: Int, using rng: inout SeededRandom) -> RESPValue {
        switch Int.random(in: 0..<(depth < 5 ? 7 : 5), using: &rng) {
        case 0: return .simpleString(String(repeating: "x", count: Int.random(in: 0...8, using: &rng)))
        case 1: return .error("ERR " + String(Int.random(in: 0...999, using: &rng)))
        case 2: return .integer(Int64.random(in: .min ... .max, using: &rng))
        case 3: return .bulkString((0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        case 4: return .null
        default: return .array((0..<Int.random(in: 0...5, using: &rng)).map { _ in random(depth: depth + 1, using: &rng) })
        }
    }

    var encodedForTest: [UInt8] {
        switch self {
        case .simpleString(let s): return Array("+\(s)\r\n".utf8)
        case .error(let e): return Array("-\(e)\r\n".utf8)
        case .integer(let i): return Array(":\(i)\r\n".utf8)
        case .null: return Array("$-1\r\n".utf8)
        case .bulkString(let bytes): return Array("$\(bytes.count)\r\n".utf8) + bytes + Array("\r\n".utf8)
        case .array(let values): return Array("*\(values.count)\r\n".utf8) + values.flatMap(\.encodedForTest)
        }
    }
}
