import Foundation
import Testing
@testable import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Connection-scoped commands: refused on the shared connections, run on a lease", .timeLimit(.minutes(1)))
struct ConnectionScopeTests {
    static let refused: [RedisCommand] = [
        RedisCommand("MULTI"), RedisCommand("watch", "k"), RedisCommand("SELECT", 1), RedisCommand("CLIENT", "REPLY", "SKIP"),
        RedisCommand("client", "reply", "off"), RedisCommand("SUBSCRIBE", "channel"), RedisCommand("MONITOR"),
        RedisCommand("BLPOP", "k", 0), RedisCommand("XREAD", "COUNT", 1, "block", 0, "STREAMS", "s", "$"),
        RedisCommand("CLIENT", "TRACKING", "ON"), RedisCommand("RESET"),
    ]

    @Test(arguments: refused)
    func aCommandThatChangesOrHoldsItsConnectionIsNotSentOnASharedOne(_ command: RedisCommand) async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            defer { client.shutdown() }
            let before = try await client.commandCalls()
            let error = await #expect(throws: RedisClientError.self) { try await client.send(command) }
            #expect(error?.code == .connectionScopedCommand)
            #expect(error?.isUnavailable == false)
            // In a pipeline the whole batch is refused: nothing of it runs.
            let batch = await #expect(throws: RedisClientError.self) {
                try await client.pipeline([RedisCommand("INCR", "scope:counter"), command])
            }
            #expect(batch?.code == .connectionScopedCommand)
            let after = try await client.commandCalls()
            let name = command.name.lowercased()
            #expect(after.keys.filter { $0 == name || $0.hasPrefix(name + "|") }.allSatisfy { after[$0] == before[$0] })
            #expect(after["incr"] == before["incr"])
        }
    }

    @Test func commandsThatOnlyLookAlikeStayShared() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            defer { client.shutdown() }
            _ = try await client.send("CLIENT", "ID")
            _ = try await client.send("XREAD", "COUNT", 1, "STREAMS", "scope:stream", "0")
            _ = try await client.send("CLIENT", "LIST")
        }
    }

    @Test func aTransactionOnALeaseIsIsolatedFromOtherCallers() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url) { $0.poolSize = 1 }
            defer { client.shutdown() }
            let key = "lease:\(UUID())"
            _ = try await client.send("SET", key, 100)
            let committed = try await client.withConnection { lease in
                try await lease.send("WATCH", key)
                let balance = try await lease.send("GET", key).int ?? 0
                try await lease.send("MULTI")
                // A shared-connection command meanwhile is not pulled into the transaction.
                #expect(try await client.send("GET", key) == .bulkString(Array("100".utf8)))
                #expect(try await lease.send("SET", key, balance - 10) == .simpleString("QUEUED"))
                return try await lease.send("EXEC")
            }
            #expect(committed == .array([.simpleString("OK")]))
            // Another caller's write between WATCH and EXEC aborts it.
            let aborted = try await client.withConnection { lease in
                try await lease.send("WATCH", key)
                _ = try await client.send("INCR", key)
                try await lease.send("MULTI")
                try await lease.send("SET", key, 0)
                return try await lease.send("EXEC")
            }
            #expect(aborted == .null)
            #expect(try await client.send("GET", key) == .bulkString(Array("91".utf8)))
            _ = try await client.send("DEL", key)
        }
    }

    @Test func aBlockingCommandOnALeaseLeavesTheSharedConnectionsFree() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url) { $0.poolSize = 1 }
            defer { client.shutdown() }
            let key = "lease:list:\(UUID())"
            async let popped = client.withConnection(commandTimeout: .seconds(10)) { lease in
                try await lease.send("BLPOP", key, 5)
            }
            #expect(await eventually { ((try? await client.send("CLIENT", "LIST").string) ?? "").contains("cmd=blpop") })
            _ = try await client.send("RPUSH", key, "item")
            #expect(try await popped == .array([.bulkString(Array(key.utf8)), .bulkString(Array("item".utf8))]))
        }
    }

    /// A caller cancelled during `BLPOP 0` ends its lease: the connection is closed at once,
    /// not held until the server's reply or the command timeout.
    @Test func cancellingALeaseClosesItsConnectionAtOnce() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            defer { client.shutdown() }
            let blocked = Task {
                try await client.withConnection(commandTimeout: .seconds(60)) { lease in try await lease.send("BLPOP", "lease:never", 0) }
            }
            #expect(await eventually { ((try? await client.send("CLIENT", "LIST").string) ?? "").contains("cmd=blpop") })
            let cancelled = ContinuousClock.now
            blocked.cancel()
            await #expect(throws: CancellationError.self) { try await blocked.value }
            #expect(ContinuousClock.now - cancelled < .seconds(2))
            #expect(await eventually { !((try? await client.send("CLIENT", "LIST").string) ?? "cmd=blpop").contains("cmd=blpop") })
        }
    }

    @Test func aLeaseRefusesWhatWouldBreakReplyMatching() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            defer { client.shutdown() }
            try await client.withConnection { (lease: RedisLease) async throws in
                for command in [RedisCommand("SUBSCRIBE", "c"), RedisCommand("CLIENT", "REPLY", "OFF"), RedisCommand("MONITOR")] {
                    let error = await #expect(throws: RedisClientError.self) { try await lease.send(command) }
                    #expect(error?.code == .connectionScopedCommand)
                }
                // Still usable: nothing was sent.
                #expect(try await lease.send("SELECT", 1) == .simpleString("OK"))
                #expect(try await lease.send("PING") == .simpleString("PONG"))
            }
        }
    }

    @Test func leasesAndQueuedCommandsAreBounded() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url) {
                $0.poolSize = 1
                $0.spreadThreshold = 1
                $0.maximumCommandsPerConnection = 1
                $0.maximumLeasedConnections = 1
            }
            defer { client.shutdown() }
            try await client.withConnection { _ in
                let error = await #expect(throws: RedisClientError.self) { try await client.withConnection { _ in } }
                #expect(error?.code == .overloaded)
            }
            // The lease was given back.
            try await client.withConnection { lease in _ = try await lease.send("PING") }
            let slow = Task { try await client.send("DEBUG", "SLEEP", "0.5") }
            #expect(await eventually { client.commandsInFlight == 1 })
            let error = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
            #expect(error?.code == .overloaded)
            #expect(error?.isUnavailable == true)
            _ = try await slow.value
            #expect(try await client.send("PING") == .simpleString("PONG"))
        }
    }
}

extension RedisCommand: CustomTestStringConvertible {
    public var testDescription: String { name }
}
