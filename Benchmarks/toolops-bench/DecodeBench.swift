import ArgumentParser
import CHiredis
import Foundation
import ToolOpsCore
import ToolOpsRedis

/// `toolops-bench decode`: the Swift `RESPReader` against hiredis 0.14's reader (with the
/// conversion to `RESPValue` the client did before), on the same bytes fed in 64 KiB reads as
/// a connection receives them.
struct DecodeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode", abstract: "RESP decoding: ToolOpsRedis' RESPReader vs hiredis' reader, MB/s and replies/s.")

    @Option(help: "Rounds per workload; the best round of each side is reported.")
    var rounds: Int = 5

    func run() async throws {
        let workloads: [(String, [UInt8], Int)] = [
            Self.workload("100k small bulk strings (GET)", count: 100_000) { _ in Self.bulk(3) },
            Self.workload("100k integers", count: 100_000) { i in Array(":\(i)\r\n".utf8) },
            Self.workload("2k arrays of 100 bulk strings", count: 2_000) { _ in
                Array("*100\r\n".utf8) + (0..<100).flatMap { _ in Self.bulk(16) }
            },
            Self.workload("64 bulk strings of 1 MiB", count: 64) { _ in Self.bulk(1 << 20) },
        ]
        say(pad("workload", 34) + pad("RESPReader MB/s", 17) + pad("hiredis MB/s", 15) + "ratio")
        for (name, bytes, count) in workloads {
            var ours = 0.0
            var reference = 0.0
            for _ in 0..<max(1, rounds) {
                ours = max(ours, try Self.measure(bytes, count: count, decode: Self.swiftReader))
                reference = max(reference, try Self.measure(bytes, count: count, decode: Self.hiredisReader))
            }
            let mb = Double(bytes.count) / 1_048_576
            say(pad(name, 34) + pad(String(format: "%.0f", mb * ours), 17) + pad(String(format: "%.0f", mb * reference), 15)
                + String(format: "%.2f×", ours / reference))
        }
    }

    static func bulk(_ size: Int) -> [UInt8] { Array("$\(size)\r\n".utf8) + [UInt8](repeating: 120, count: size) + [13, 10] }

    static func workload(_ name: String, count: Int, _ reply: (Int) -> [UInt8]) -> (String, [UInt8], Int) {
        var bytes: [UInt8] = []
        for index in 0..<count { bytes.append(contentsOf: reply(index)) }
        return (name, bytes, count)
    }

    /// Passes of the whole buffer per second.
    static func measure(_ bytes: [UInt8], count: Int, decode: ([UInt8]) throws -> Int) throws -> Double {
        let start = ContinuousClock.now
        let decoded = try decode(bytes)
        let elapsed = ContinuousClock.now - start
        guard decoded == count else { throw ValidationError("decoded \(decoded) replies, expected \(count)") }
        return 1 / elapsed.secondsDouble
    }

    static func swiftReader(_ bytes: [UInt8]) throws -> Int {
        let reader = RESPReader()
        var replies = 0
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let end = min(raw.count, offset + 65_536)
                try reader.feed(UnsafeRawBufferPointer(rebasing: raw[offset..<end]))
                while let event = try reader.next() { if case .reply = event { replies += 1 } }
                offset = end
            }
        }
        return replies
    }

    static func hiredisReader(_ bytes: [UInt8]) throws -> Int {
        guard let reader = redisReaderCreate() else { throw ValidationError("redisReaderCreate failed") }
        defer { redisReaderFree(reader) }
        var replies = 0
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let end = min(raw.count, offset + 65_536)
                guard let base = raw.baseAddress,
                    redisReaderFeed(reader, (base + offset).assumingMemoryBound(to: CChar.self), end - offset) == REDIS_OK
                else { throw ValidationError("hiredis refused the bytes") }
                while true {
                    var reply: UnsafeMutableRawPointer?
                    guard redisReaderGetReply(reader, &reply) == REDIS_OK else { throw ValidationError("hiredis: invalid RESP") }
                    guard let reply else { break }
                    _ = HiredisReference.convert(reply.assumingMemoryBound(to: redisReply.self))
                    freeReplyObject(reply)
                    replies += 1
                }
                offset = end
            }
        }
        return replies
    }
}
