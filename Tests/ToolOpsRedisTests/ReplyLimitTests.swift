import Foundation
import Synchronization
import Testing
@testable import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Reply limits: a reply over a limit fails its command, never the process", .timeLimit(.minutes(1)))
struct ReplyLimitTests {
    /// One connection, so "the same connection" is observable.
    func makeClient(_ url: String, _ change: (inout RedisConfiguration) -> Void = { _ in }) throws -> RedisClient {
        try ToolOpsRedisTests.makeClient(url) { configuration in
            configuration.poolSize = 1
            change(&configuration)
        }
    }

    /// The reply is skipped and the stream stays in sync: a command pipelined behind it on
    /// the same connection gets its own reply, and the connection is not replaced.
    @Test func aReplyOverALimitFailsOnlyItsOwnCommand() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url) { $0.maximumReplyElements = 1000; $0.maximumReplyBytes = 8192 }
            defer { client.shutdown() }
            let key = "limits:\(UUID())"
            _ = try await client.send(RedisCommand("RPUSH", arguments: [key] + (0..<2000).map { "\($0)" }))
            _ = try await client.send("SET", key + ":big", [UInt8](repeating: 7, count: 10_000))
            _ = try await client.send("SET", key + ":small", "fine")
            let id = try await client.send("CLIENT", "ID")
            for command in [RedisCommand("LRANGE", key, 0, -1), RedisCommand("GET", key + ":big")] {
                async let tooBig = Result { try await client.send(command) } as Result<RESPValue, any Error>
                async let behind = client.send("GET", key + ":small")
                let outcome = await tooBig
                #expect(throws: RedisClientError.self) { try outcome.get() }
                #expect((outcome.failure as? RedisClientError)?.code == .protocolError)
                #expect(try await behind == .bulkString(Array("fine".utf8)))
            }
            #expect(try await client.send("LRANGE", key, 0, 9).array?.count == 10)
            #expect(try await client.send("CLIENT", "ID") == id)
            _ = try await client.send("DEL", key, key + ":big", key + ":small")
        }
    }

    @Test func nestingBeyondHiredisSevenLevelsDecodesAndOnlyOurDepthLimitRejects() async throws {
        try await withRedisURL { url in
            let nested = "local t = 1; for i = 1, tonumber(ARGV[1]) do t = {t} end; return t"
            let client = try makeClient(url) { $0.maximumReplyDepth = 16 }
            defer { client.shutdown() }
            var reply = try await client.send("EVAL", nested, 0, 12)
            var depth = 0
            while case .array(let values) = reply, let first = values.first { depth += 1; reply = first }
            #expect(depth == 12)
            #expect(reply == .integer(1))
            let error = await #expect(throws: RedisClientError.self) { try await client.send("EVAL", nested, 0, 20) }
            #expect(error?.code == .protocolError)
            #expect(error?.message.contains("maximumReplyDepth") == true)
            #expect(try await client.send("PING") == .simpleString("PONG"))
        }
    }

    /// The scenario that took hiredis past 7 GB: an array header announcing 2^31 elements,
    /// then small elements as fast as the peer can send them. In a process of its own (so the
    /// peak memory is this client's alone): the command fails at once, the process's peak
    /// memory stays small while the peer streams, and once the command's deadline passes with
    /// the reply still streaming, the connection is replaced.
    @Test func anEndlessArrayFailsAtOnceHoldsNoMemoryAndTheConnectionIsReplaced() async throws {
        let binary = try #require(probeBinary())
        let streamed = Counter()
        let peer = try ScriptedPeer { index, connection in
            guard connection.waitFor("PING\r\n") else { return }
            connection.write("+PONG\r\n")
            if index > 0 {
                // The replacement connection behaves.
                while connection.waitFor("PING\r\n", seconds: 30) { connection.write("+PONG\r\n") }
                return
            }
            guard connection.waitFor("GET") else { return }
            connection.write("*2147483648\r\n")
            let chunk = Array(String(repeating: ":1\r\n", count: 16 * 1024).utf8)
            while connection.write(chunk) { streamed.increment() }
        }
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["redis-send", "--url", peer.url, "--command-timeout-ms", "3000", "--hold-ms", "2500"]
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let lines = Dictionary(output.split(separator: "\n").map { line in
            let parts = line.split(separator: " ", maxSplits: 1)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }, uniquingKeysWith: { $1 })
        // Failed at the header, well before the 3 s deadline.
        #expect(lines["first"] == "protocolError 0", "\(output)")
        // hiredis kept ~50 bytes per element: 8 MiB of ":1\r\n" cost it ~100 MB.
        let streamedBytes = streamed.current * 5 * 16 * 1024
        #expect(streamedBytes > 8 << 20, "the peer streamed too little to prove anything")
        let peak = Int(lines["peak"] ?? "") ?? .max
        #expect(peak < 64 << 20, "peak resident memory \(peak >> 20) MiB after the peer streamed \(streamedBytes >> 20) MiB")
        #expect(lines["then"] == "+PONG")
        #expect(peer.accepted.current == 2)
    }

    /// Redis at `maxclients` answers the first handshake command with an error and closes:
    /// the error is what the caller sees, not "connection closed".
    @Test func aReplyThatArrivesWithTheServersCloseIsReported() async throws {
        let peer = try ScriptedPeer { _, connection in
            connection.write("-ERR max number of clients reached\r\n")
        }
        let client = try makeClient(peer.url) { $0.reconnect = .init(initialDelay: .seconds(5), maximumDelay: .seconds(5)) }
        defer { client.shutdown() }
        let error = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
        #expect(error?.message.contains("max number of clients reached") == true, "\(String(describing: error))")
    }
}
