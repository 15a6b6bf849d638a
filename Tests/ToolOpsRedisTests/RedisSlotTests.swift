import Foundation
import Testing
import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Redis Cluster slots")
struct RedisSlotTests {
    @Test func knownSlotsAndHashTags() {
        #expect(RedisSlot(key: "foo").value == 12182)  // as a cluster's MOVED reply names it
        #expect(RedisSlot(key: "123456789").value == 0x31C3 & 0x3FFF)  // CRC16/XMODEM's check value 0x31C3
        #expect(RedisSlot(key: "{user1000}.following") == RedisSlot(key: "{user1000}.followers"))
        #expect(RedisSlot(key: "{user1000}.following") == RedisSlot(key: "user1000"))
        #expect(RedisSlot(key: "foo{}{bar}") == RedisSlot(key: Array("foo{}{bar}".utf8)), "an empty first tag: the whole key")
        #expect(RedisSlot(key: "foo{{bar}}zap") == RedisSlot(key: "{bar"), "the tag ends at the first }")
        #expect(RedisSlot(key: "foo{bar}{zap}") == RedisSlot(key: "bar"))
        #expect(RedisSlot(key: "") == RedisSlot(key: []) && RedisSlot(key: "").value == 0)
    }

    @Test func keysInOneSlotAreAcceptedOthersAreNamed() throws {
        #expect(try RedisSlot.common([]) == nil)
        #expect(try RedisSlot.common(["toolops:bh:{t}", "toolops:bhq:{t}", "toolops:bht:{t}"]) == RedisSlot(key: "t"))
        do {
            _ = try RedisSlot.common(["toolops:cb:{a}", "toolops:cb:events"])
            Issue.record("keys in two slots were accepted")
        } catch {
            #expect(error.code == .crossSlot && error.message.contains("toolops:cb:events") && !error.isUnavailable)
        }
    }

    /// The same slots as a real cluster node computes (`CLUSTER KEYSLOT`), for keys with and
    /// without tags, braces in odd places and bytes outside ASCII.
    @Test func slotsMatchRedisItself() async throws {
        let nodes = NSTemporaryDirectory() + "toolops-slots-\(UUID().uuidString).conf"
        defer { try? FileManager.default.removeItem(atPath: nodes) }
        try await withRedisServer(.init(extraArguments: ["--cluster-enabled", "yes", "--cluster-config-file", nodes, "--cluster-port", "\(try RedisServer.freePort())"])) { server in
            let client = try RedisClient(url: server.url, logger: quietLogger)
            defer { client.shutdown() }
            var random = SeededRandom(seed: 19)
            let alphabet = Array("ab{}:xyzé0".utf8) + [0xFF]
            var keys = ["foo", "{user1000}.following", "a{b}c", "{}", "{{}}", "}{", "x{", "toolops:rl:{tenant:*:acme}"]
            for _ in 0..<300 {
                keys.append(String(decoding: (0..<Int.random(in: 1...12, using: &random)).map { _ in alphabet.randomElement(using: &random)! }, as: UTF8.self))
            }
            for key in keys {
                let expected = try await client.send("CLUSTER", "KEYSLOT", key).int
                #expect(Int64(RedisSlot(key: key).value) == expected, "\(key)")
            }
        }
    }
}
