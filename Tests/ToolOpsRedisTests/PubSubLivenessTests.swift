import Foundation
import Testing
@testable import ToolOpsRedis
import ToolOpsTestSupport
import ToolOpsTesting

@Suite("Pub/sub liveness, refusals and back-pressure", .timeLimit(.minutes(1)))
struct PubSubLivenessTests {
    /// A NAT or load balancer that dropped an idle flow looks like this: the subscription was
    /// confirmed, then nothing — not even a FIN. The heartbeat PING goes unanswered, the
    /// channel is declared lost, and a new connection restores it.
    @Test func aSilentlyDeadChannelIsLostWithinTheHeartbeatAndRestored() async throws {
        let peer = try ScriptedPeer { index, connection in
            guard connection.waitFor("PING\r\n") else { return }
            connection.write("+PONG\r\n")
            guard connection.waitFor("events\r\n") else { return }
            connection.write("*3\r\n$9\r\nsubscribe\r\n$6\r\nevents\r\n:1\r\n")
            if index == 0 {
                // Swallows everything from now on, PINGs included.
                while connection.waitFor("\r\n", seconds: 30) {}
                return
            }
            while connection.waitFor("PING\r\n", seconds: 30) { connection.write("*2\r\n$4\r\npong\r\n$0\r\n\r\n") }
        }
        let client = try makeClient(peer.url) {
            $0.clientName = nil
            $0.pubSubHeartbeat = .milliseconds(200)
            $0.commandTimeout = .milliseconds(300)
        }
        defer { client.shutdown() }
        let subscription = try await client.subscribe(to: ["events"])
        var iterator = subscription.makeAsyncIterator()
        let subscribed = ContinuousClock.now
        guard case .connectionLost(let error) = await iterator.next() else { throw TestFailure("no connectionLost") }
        #expect(error.code == .commandTimeout)
        #expect(ContinuousClock.now - subscribed < .seconds(3))
        #expect(await iterator.next() == .restored)
        #expect(peer.accepted.current == 2)
    }

    /// A server that takes the SUBSCRIBE and never confirms it: the subscribe fails with a
    /// timeout after the connect and command timeouts, it does not hang.
    @Test func anUnconfirmedSubscriptionTimesOut() async throws {
        let peer = try ScriptedPeer { _, connection in
            guard connection.waitFor("PING\r\n") else { return }
            connection.write("+PONG\r\n")
            while connection.waitFor("\r\n", seconds: 30) {}  // SUBSCRIBE swallowed
        }
        let client = try makeClient(peer.url) {
            $0.clientName = nil
            $0.connectTimeout = .milliseconds(200)
            $0.commandTimeout = .milliseconds(300)
        }
        defer { client.shutdown() }
        let started = ContinuousClock.now
        let error = await #expect(throws: RedisClientError.self) { _ = try await client.subscribe(to: ["silent"]) }
        #expect(error?.code == .commandTimeout)
        #expect(ContinuousClock.now - started < .seconds(3))
    }

    @Test func aLiveChannelIsPingedAndNeverLost() async throws {
        try await withRedisServer { server in
            let client = try makeClient(server.url) { $0.pubSubHeartbeat = .milliseconds(50) }
            defer { client.shutdown() }
            let lost = Flag()
            let handle = try await client.subscribe(to: ["quiet"]) { event in
                if case .connectionLost = event { lost.set() }
            }
            defer { handle.cancel() }
            let before = try await client.commandCalls()["ping"] ?? 0
            try await Task.sleep(for: .milliseconds(600))
            let after = try await client.commandCalls()["ping"] ?? 0
            #expect(after - before >= 4)
            #expect(!lost.isSet)
        }
    }

    /// An ACL without the channel answers SUBSCRIBE with NOPERM: the caller gets that error at
    /// once, not a timeout.
    @Test func aRefusedSubscriptionFailsWithTheServersError() async throws {
        try await withRedisServer { server in
            let admin = try makeClient(server.url)
            defer { admin.shutdown() }
            _ = try await admin.send("ACL", "SETUSER", "limited", "on", ">limited-password-123", "resetchannels", "&allowed", "~*", "+@all")
            let client = try makeClient(server.url) {
                $0.username = "limited"
                $0.password = "limited-password-123"
                $0.commandTimeout = .seconds(5)
            }
            defer { client.shutdown() }
            let started = ContinuousClock.now
            let error = await #expect(throws: RedisClientError.self) { _ = try await client.subscribe(to: ["forbidden"]) }
            #expect(error?.serverErrorPrefix == "NOPERM")
            #expect(ContinuousClock.now - started < .seconds(2))
            // Allowed channels still work on the same connection.
            let subscription = try await client.subscribe(to: ["allowed"])
            var iterator = subscription.messages.makeAsyncIterator()
            _ = try await admin.send("PUBLISH", "allowed", "hello")
            #expect(await iterator.next()?.text == "hello")
        }
    }

    /// A consumer that stops reading does not make the buffer grow without bound: the oldest
    /// events go, and the consumer is told it missed some.
    @Test func aSubscriptionsBufferIsBoundedAndAnOverflowIsReportedAsAGap() async throws {
        try await withRedisServer { server in
            let client = try makeClient(server.url) { $0.maximumBufferedPubSubEvents = 16 }
            defer { client.shutdown() }
            let subscription = try await client.subscribe(to: ["flood"])
            for index in 0..<200 { try await client.send("PUBLISH", "flood", "\(index)") }
            try await client.send("PUBLISH", "flood", "last")
            var events: [RedisPubSubEvent] = []
            for await event in subscription {
                events.append(event)
                if case .message(let message) = event, message.text == "last" { break }
            }
            // 202 events were sent to a buffer of 16. A few may arrive after the iteration
            // starts (PUBLISH answers before the subscriber receives), so not exactly 16.
            #expect(events.count < 40, "\(events.count) events reached a consumer that fell behind by 186")
            let gap = events.firstIndex { if case .connectionLost(let error) = $0 { error.code == .overloaded } else { false } }
            #expect(gap != nil)
            #expect(events.contains(.restored))
        }
    }
}
