import Foundation
import Synchronization
import Testing
@testable import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Redis client against a real redis-server", .timeLimit(.minutes(1)))
struct RedisClientTests {
    @Test func everyReplyTypeRoundTrips() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            defer { client.shutdown() }
            let key = "t:\(UUID())"
            let binary: [UInt8] = [0, 255, 13, 10, 0x24, 0]
            #expect(try await client.send("SET", key, binary) == .simpleString("OK"))
            #expect(try await client.send("GET", key) == .bulkString(binary))
            #expect(try await client.send("SET", key, "") == .simpleString("OK"))
            #expect(try await client.send("GET", key) == .bulkString([]))
            #expect(try await client.send("GET", key + ":missing") == .null)
            #expect(try await client.send("DEL", key) == .integer(1))
            #expect(try await client.send("INCRBY", key, -5) == .integer(-5))
            #expect(try await client.send("RPUSH", key + ":l", "a", "b") == .integer(2))
            #expect(try await client.send("LRANGE", key + ":l", 0, -1) == .array([.bulkString([97]), .bulkString([98])]))
            #expect(try await client.send("LRANGE", key + ":empty", 0, -1) == .array([]))
            let nested = try await client.send("EVAL", "return {1, 'two', {3, false}, redis.error_reply('inner')}", 0)
            #expect(nested == .array([.integer(1), .bulkString(Array("two".utf8)), .array([.integer(3), .null]), .error("ERR inner")]))
            let error = await #expect(throws: RedisClientError.self) { try await client.send("INCR", key + ":l") }
            #expect(error?.code == .serverError)
            #expect(error?.serverErrorPrefix == "WRONGTYPE")
            #expect(error?.isUnavailable == false)
            _ = try await client.send("DEL", key, key + ":l")
        }
    }

    @Test func largeValuesRoundTrip() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            defer { client.shutdown() }
            let key = "t:big:\(UUID())"
            let value = (0..<(3 * 1024 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            try await client.send("SET", key, value)
            #expect(try await client.send("GET", key) == .bulkString(value))
            try await client.send("DEL", key)
        }
    }

    @Test func thousandConcurrentCallersOnOneConnectionEachGetTheirReply() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url) { $0.poolSize = 1 }
            defer { client.shutdown() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<1000 {
                    group.addTask {
                        let payload = "caller-\(index)-" + String(repeating: "x", count: index % 50)
                        let reply = try await client.send("ECHO", payload)
                        #expect(reply == .bulkString(Array(payload.utf8)))
                    }
                }
                try await group.waitForAll()
            }
            // One connection for commands (plus none for pub/sub).
            let clients = try await client.send("CLIENT", "LIST", "TYPE", "normal").string ?? ""
            #expect(clients.split(separator: "\n").filter { $0.contains("name=toolops") }.count == 1)
        }
    }

    @Test func busyPollingClientBehavesLikeTheDefault() async throws {
        try await withRedisServer { server in
            let client = try makeClient(server.url) {
                $0.busyPoll = .microseconds(300)
                $0.commandTimeout = .seconds(2)
            }
            defer { client.shutdown() }
            // One caller (the busy-polling regime) and many (beyond its in-flight bound).
            for index in 0..<200 { #expect(try await client.send("ECHO", "\(index)") == .bulkString(Array("\(index)".utf8))) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<500 {
                    group.addTask {
                        let reply = try await client.send("ECHO", "c\(index)")
                        #expect(reply == .bulkString(Array("c\(index)".utf8)))
                    }
                }
                try await group.waitForAll()
            }
            // A dead server still fails calls promptly, and the client recovers.
            server.kill()
            let killed = ContinuousClock.now
            let down = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
            #expect(down?.isUnavailable == true)
            // Promptly: a refused reconnect, not a command timeout (5 s by default).
            #expect(ContinuousClock.now - killed < .seconds(1))
            try server.start()
            var reply: RESPValue?
            let started = ContinuousClock.now
            while reply == nil && ContinuousClock.now - started < .seconds(10) {
                reply = try? await client.send("PING")
                if reply == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(reply == .simpleString("PONG"))
        }
        var configuration = RedisConfiguration()
        configuration.busyPoll = .milliseconds(-1)
        #expect(throws: RedisClientError.self) { try configuration.validate() }
        configuration.busyPoll = .seconds(1)
        #expect(throws: RedisClientError.self) { try configuration.validate() }
    }

    @Test func pipelineReturnsEachResultInOrder() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            defer { client.shutdown() }
            let key = "t:p:\(UUID())"
            let results = try await client.pipeline([
                RedisCommand("SET", key, "1"),
                RedisCommand("INCR", key),
                RedisCommand("HGET", key, "field"),  // WRONGTYPE in the middle
                RedisCommand("GET", key),
            ])
            #expect(results.count == 4)
            #expect(try results[0].get() == .simpleString("OK"))
            #expect(try results[1].get() == .integer(2))
            #expect(throws: RedisClientError.self) { try results[2].get() }
            #expect(try results[3].get() == .bulkString(Array("2".utf8)))
            // A batch of one keeps the reply's own shape (a one-element array stays an array).
            try await client.send("RPUSH", key + ":l", "only")
            let single = try await client.pipeline([RedisCommand("LRANGE", key + ":l", 0, -1)])
            #expect(single.count == 1)
            #expect(try single[0].get() == .array([.bulkString(Array("only".utf8))]))
            try await client.send("DEL", key, key + ":l")
        }
    }

    @Test func scriptFlushBetweenCallsIsInvisible() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            defer { client.shutdown() }
            let key = "t:s:\(UUID())"
            let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            #expect(try await client.run(script, keys: [key], arguments: [2]) == .integer(2))
            try await client.send("SCRIPT", "FLUSH")
            #expect(try await client.run(script, keys: [key], arguments: [3]) == .integer(5))
            try await client.send("SCRIPT", "FLUSH")
            let batch = try await client.pipeline([
                .evalSHA(script, keys: [key], arguments: [1]),
                RedisCommand("GET", key),
                .evalSHA(script, keys: [key], arguments: [1]),
            ])
            #expect(try batch[0].get() == .integer(6))
            #expect(try batch[2].get() == .integer(7))
            // Exactly one script in the batch needs reloading.
            try await client.send("SCRIPT", "FLUSH")
            let mixed = try await client.pipeline([RedisCommand("GET", key), .evalSHA(script, keys: [key], arguments: [1])])
            #expect(try mixed[0].get() == .bulkString(Array("7".utf8)))
            #expect(try mixed[1].get() == .integer(8))
            try await client.send("DEL", key)
        }
    }

    @Test func databaseIsSelectedOnConnect() async throws {
        try await withRedisServer { server in
            let db3 = try makeClient(server.url + "/3")
            let db0 = try makeClient(server.url)
            defer { db3.shutdown(); db0.shutdown() }
            try await db3.send("SET", "where", "three")
            #expect(try await db0.send("GET", "where") == .null)
            #expect(try await db3.send("GET", "where") == .bulkString(Array("three".utf8)))
        }
    }

    @Test func unixSocket() async throws {
        var options = RedisServer.Options()
        options.unixSocket = true
        try await withRedisServer(options) { server in
            let client = try makeClient("unix://\(server.socketPath)?db=1")
            defer { client.shutdown() }
            #expect(try await client.send("PING") == .simpleString("PONG"))
        }
    }

    @Test func authenticationWithPasswordAndACLUser() async throws {
        var options = RedisServer.Options()
        options.password = "letmein"
        options.aclUsers = [("alice", "wonderland")]
        try await withRedisServer(options) { server in
            let port = server.port
            let user = try makeClient("redis://alice:wonderland@127.0.0.1:\(port)")
            let legacy = try makeClient("redis://:letmein@127.0.0.1:\(port)")
            let wrong = try makeClient("redis://alice:nope@127.0.0.1:\(port)")
            let none = try makeClient("redis://127.0.0.1:\(port)")
            defer { [user, legacy, wrong, none].forEach { $0.shutdown() } }
            #expect(try await user.send("ACL", "WHOAMI") == .bulkString(Array("alice".utf8)))
            #expect(try await legacy.send("ACL", "WHOAMI") == .bulkString(Array("default".utf8)))
            let wrongError = await #expect(throws: RedisClientError.self) { try await wrong.send("PING") }
            #expect(wrongError?.code == .authenticationFailed)
            #expect(wrongError?.isUnavailable == false)
            #expect(wrongError?.message.contains("WRONGPASS") == true)
            let noneError = await #expect(throws: RedisClientError.self) { try await none.send("PING") }
            #expect(noneError?.code == .authenticationFailed)
        }
    }

    @Test func refusedConnectionIsTypedAndFast() async throws {
        let port = try RedisServer.freePort()
        let client = try makeClient("redis://127.0.0.1:\(port)") { $0.connectTimeout = .seconds(20) }
        defer { client.shutdown() }
        let started = ContinuousClock.now
        let error = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
        #expect(error?.code == .connectionRefused)
        #expect(error?.isUnavailable == true)
        // Far below the connect timeout: a refusal is reported, not waited out (the margin
        // absorbs a loaded CI machine).
        #expect(ContinuousClock.now - started < .seconds(3))
    }

    @Test func serverKilledMidFlightFailsEveryPendingCallThenRecovers() async throws {
        try await withRedisServer { server in
            let client = try makeClient(server.url) { $0.poolSize = 2; $0.commandTimeout = .seconds(10) }
            defer { client.shutdown() }
            try await client.send("SET", "k", "v")
            // Park the server (in force once CLIENT PAUSE answers) so that everything after this
            // is in flight when it dies.
            let admin = try makeClient(server.url)
            defer { admin.shutdown() }
            #expect(try await admin.send("CLIENT", "PAUSE", "5000", "ALL") == .simpleString("OK"))
            let results = try await withThrowingTaskGroup(of: Result<RESPValue, RedisClientError>.self) { group in
                for _ in 0..<200 { group.addTask { await Self.capture { try await client.send("GET", "k") } } }
                #expect(await eventually { client.commandsInFlight == 200 })
                let killedAt = ContinuousClock.now
                server.kill()
                var results: [Result<RESPValue, RedisClientError>] = []
                for try await result in group { results.append(result) }
                #expect(ContinuousClock.now - killedAt < .seconds(4), "pending calls fail fast, not after the 10 s timeout")
                return results
            }
            let failures = results.compactMap { result -> RedisClientError? in
                if case .failure(let error) = result { return error }
                return nil
            }
            #expect(failures.count == results.count, "every in-flight command fails")
            #expect(failures.allSatisfy { $0.isUnavailable }, "\(failures.first.map(String.init(describing:)) ?? "")")

            // While the server is down, calls fail fast with an "unavailable" error.
            let down = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
            #expect(down?.isUnavailable == true)

            try server.start()
            let recovered = ContinuousClock.now
            var reply: RESPValue?
            while reply == nil && ContinuousClock.now - recovered < .seconds(10) {
                reply = try? await client.send("PING")
                if reply == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(reply == .simpleString("PONG"))
            #expect(ContinuousClock.now - recovered < .seconds(5), "recovers within the maximum backoff (2 s) plus slack")
        }
    }

    @Test func commandTimeoutReplacesTheConnectionAndFailsEveryoneInFlight() async throws {
        try await withRedisServer { server in
            // Generous margins (2 s timeout, 5 s stall) so the PING is queued behind the stalled
            // command even when the suite runs in parallel on 2 cores.
            let client = try makeClient(server.url) { $0.poolSize = 1; $0.commandTimeout = .seconds(2) }
            defer { client.shutdown() }
            let before = try await client.send("CLIENT", "ID").int
            async let slow = Self.capture { try await client.send("DEBUG", "SLEEP", 5) }
            // Queue the PING behind it on the same connection while it is still in flight.
            #expect(try await Self.eventuallyInFlight(client))
            async let behind = Self.capture { try await client.send("PING") }
            let (slowResult, behindResult) = await (slow, behind)
            for result in [slowResult, behindResult] {
                guard case .failure(let error) = result else {
                    Issue.record("expected a timeout, got \(result)")
                    continue
                }
                #expect(error.code == .commandTimeout)
                #expect(error.isUnavailable)
            }
            // The next command runs on a fresh connection, once the server is responsive again.
            var after: Int64?
            let deadline = ContinuousClock.now + .seconds(10)
            while after == nil && ContinuousClock.now < deadline { after = try? await client.send("CLIENT", "ID").int }
            #expect(before != nil && after != nil && before != after)
        }
    }

    @Test func cancellationReachesAWaitingCommandAndKeepsTheConnectionConsistent() async throws {
        try await withRedisServer { server in
            // The next command waits behind the 5 s stall on the one connection: no timeout.
            let client = try makeClient(server.url) { $0.poolSize = 1; $0.commandTimeout = .seconds(15) }
            defer { client.shutdown() }
            try await client.send("SET", "k", "value")
            let slow = Task { try await client.send("DEBUG", "SLEEP", 5) }
            #expect(try await Self.eventuallyInFlight(client))
            let cancelledAt = ContinuousClock.now
            slow.cancel()
            let outcome = await slow.result
            // Well before the server answers (5 s): the caller did not wait for the reply.
            #expect(ContinuousClock.now - cancelledAt < .seconds(3))
            #expect(throws: CancellationError.self) { try outcome.get() }
            // The discarded DEBUG reply must not be handed to the next caller.
            #expect(try await client.send("GET", "k") == .bulkString(Array("value".utf8)))

            // A task cancelled before sending never sends.
            let never = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await client.send("INCR", "counter")
            }
            await #expect(throws: CancellationError.self) { try await never.value }
            #expect(try await client.send("GET", "counter") == .null)
        }
    }

    @Test func garbageFromTheSocketIsAProtocolError() async throws {
        let server = try GarbageServer(response: Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8))
        let client = try makeClient("redis://127.0.0.1:\(server.port)") { $0.clientName = nil }
        defer { client.shutdown() }
        let error = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
        #expect(error?.code == .protocolError)
        #expect(error?.isUnavailable == true)
    }

    @Test func commandsOverTheMaximumAreRefusedBeforeEncoding() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            defer { client.shutdown() }
            let big = [UInt8](repeating: 0x61, count: RedisCommand.maximumBytes + 1)
            let error = await #expect(throws: RedisClientError.self) { try await client.send("SET", "toolops-test-big", big) }
            #expect(error?.code == .commandTooLarge && error?.isUnavailable == false)
            await #expect(throws: RedisClientError.self) { try await client.pipeline([RedisCommand("SET", "toolops-test-big", big)]) }
            // Nothing was sent, and the connection is fine.
            #expect(try await client.send("EXISTS", "toolops-test-big") == .integer(0))
        }
    }

    @Test func shutdownRejectsNewCommands() async throws {
        try await withRedisURL { url in
            let client = try makeClient(url)
            #expect(try await client.send("PING") == .simpleString("PONG"))
            client.shutdown()
            let error = await #expect(throws: RedisClientError.self) { try await client.send("PING") }
            #expect(error?.code == .clientClosed)
        }
    }

    /// Waits (bounded: 5 s) until the client has a command in flight.
    static func eventuallyInFlight(_ client: RedisClient) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            if try client.connection().load > 0 { return true }
            try await Task.sleep(for: .milliseconds(1))
        }
        return false
    }

    static func capture(_ body: () async throws -> RESPValue) async -> Result<RESPValue, RedisClientError> {
        do { return .success(try await body()) } catch let error as RedisClientError { return .failure(error) } catch {
            return .failure(RedisClientError(.unexpectedReply, "\(error)"))
        }
    }
}

/// A TCP server that answers every connection with fixed bytes, then closes it.
final class GarbageServer: Sendable {
    let port: Int
    init(response: [UInt8]) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        listen(fd, 8)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread {
            for _ in 0..<4 {
                let client = accept(fd, nil, nil)
                if client < 0 { break }
                var request = [UInt8](repeating: 0, count: 1024)
                _ = recv(client, &request, request.count, 0)
                _ = response.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(client)
            }
            close(fd)
        }
    }
}
