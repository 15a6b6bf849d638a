import Testing
@testable import ToolOpsRedis

@Suite("RESP reader and encoder (hiredis codec)", .timeLimit(.minutes(1)))
struct RESPReaderTests {
    func parse(_ text: String) throws -> [RESPValue] {
        let reader = RESPReader()
        try reader.feed(Array(text.utf8))
        var values: [RESPValue] = []
        while let value = try reader.next() { values.append(value) }
        return values
    }

    @Test func everyReplyType() throws {
        let values = try parse("+OK\r\n-ERR boom\r\n:-42\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*3\r\n:1\r\n*1\r\n$1\r\nx\r\n-ERR inner\r\n*0\r\n")
        #expect(values == [
            .simpleString("OK"), .error("ERR boom"), .integer(-42), .bulkString(Array("hello".utf8)),
            .bulkString([]), .null, .null,
            .array([.integer(1), .array([.bulkString([UInt8(ascii: "x")])]), .error("ERR inner")]),
            .array([]),
        ])
    }

    @Test func binaryBulkStringsSurviveByteByByteFeeding() throws {
        let payload: [UInt8] = [0, 13, 10, 255, 36, 42, 0]
        let frame = Array("$7\r\n".utf8) + payload + Array("\r\n".utf8)
        let reader = RESPReader()
        var result: RESPValue?
        for byte in frame {
            #expect(result == nil)
            try reader.feed([byte])
            result = try reader.next()
        }
        #expect(result == .bulkString(payload))
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

    @Test func oversizedReplyIsRefusedBeforeBuffering() throws {
        let reader = RESPReader(maximumBufferedBytes: 1024)
        try reader.feed(Array("$100000\r\n".utf8))
        #expect(try reader.next() == nil)
        let error = #expect(throws: RedisClientError.self) {
            try reader.feed([UInt8](repeating: 65, count: 2048))
        }
        #expect(error?.code == .protocolError)
    }

    @Test func tooDeeplyNestedArraysAreAProtocolError() throws {
        let reader = RESPReader()
        try reader.feed(Array((String(repeating: "*1\r\n", count: 12) + ":1\r\n").utf8))
        #expect(throws: RedisClientError.self) { try reader.next() }
    }

    /// Random bytes — uniformly random, and biased towards RESP's own characters — never
    /// crash the reader: each input ends in values, "need more", or a protocol error.
    @Test func randomBytesNeverCrash() throws {
        var rng = SplitMix64(seed: 0x5EED)
        let alphabet = Array("+-:$*\r\n0123456789-1".utf8)
        var outcomes = (values: 0, errors: 0)
        for round in 0..<20_000 {
            let length = Int.random(in: 1...64, using: &rng)
            let bytes: [UInt8] = (0..<length).map { _ in
                round % 2 == 0 ? UInt8.random(in: 0...255, using: &rng) : alphabet.randomElement(using: &rng)!
            }
            let reader = RESPReader(maximumBufferedBytes: 1 << 20)
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
}

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
