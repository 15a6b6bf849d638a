import ArgumentParser
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import ServiceLifecycle
import ToolOpsCore
import ToolOpsHTTP
import ToolOpsServer
import ToolOpsTesting

/// `toolops-bench handler`: the HTTP rows of `toolops-bench http` served in-process — a fresh
/// request through Hummingbird's router and the tool endpoint each time, no sockets, no wrk.
/// What a request costs the handler itself, apart from the network and the scheduling around
/// it; set against `toolops-bench pipeline` (one prepared call reused) it shows what parsing,
/// routing and a fresh call add.
struct HandlerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "handler", abstract: "The router and the tool endpoint called in-process with fresh requests: wall and CPU time per request, per row.")

    @Option(help: "Comma-separated concurrency levels.")
    var concurrency: String = "1,16"

    @Option(help: "Requests per measurement.")
    var requests: Int = 200_000

    @Option(help: "Comma-separated rows (bare, bare-short, plain, memory, redis, redis-light). `bare` answers at the tool rows' path shape (`/bare/v1/tools/demo/echo`: the router's cost grows with the path), `bare-short` at `/bare`.")
    var rows: String = "bare,plain,memory,redis"

    func run() async throws {
        let levels = concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let logger = { var logger = Logger(label: "bench"); logger.logLevel = .warning; return logger }()
        let redis = try RedisServer()
        defer { redis.stop() }
        let assemblies = try BenchAssemblies(redisURL: redis.url, redisPool: 2, busyPollMicroseconds: 0, logger: logger)
        let router = Router()
        let reply = ByteBuffer(string: #"{"hello":"world"}"#)
        for path in ["bare", "bare/v1/tools/demo/echo"] {
            router.post(RouterPath(path)) { request, _ -> Response in
                _ = try await request.body.collect(upTo: 1 << 20)
                return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: reply))
            }
        }
        for (name, pipeline) in assemblies.rows {
            ToolRoutes(registry: assemblies.memory.registry, pipeline: pipeline).register(on: router.group(RouterPath(name)))
        }
        let responder = router.buildResponder()
        let channel = EmbeddedChannel()
        let selected = rows.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let group = ServiceGroup(services: assemblies.services, gracefulShutdownSignals: [], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            print("toolops-bench handler — \(requests) requests per cell; wall ns/request, CPU ns/request and context switches per 1,000 requests (this process)")
            print(pad("", 14) + levels.map { pad("c=\($0): wall    CPU  cs/1k", 30) }.joined())
            for name in selected {
                let path = name == "bare-short" ? "/bare" : "/\(name)/v1/tools/demo/echo"
                @Sendable func once() async throws {
                    let head = HTTPRequest(
                        method: .post, scheme: "http", authority: "127.0.0.1", path: path,
                        headerFields: [.contentType: "application/json", .contentLength: "17"])
                    let request = Request(head: head, body: RequestBody(buffer: ByteBuffer(string: #"{"hello":"world"}"#)))
                    let context = BasicRequestContext(source: .init(channel: channel, logger: logger))
                    let response = try await responder.respond(to: request, context: context)
                    guard response.status == .ok else { throw ValidationError("\(path) answered \(response.status)") }
                }
                var line = pad(name, 14)
                for level in levels {
                    let perTask = max(1, requests / level)
                    try await inParallel(level) { for _ in 0..<min(1000, perTask) { try await once() } }
                    let before = ProcessUsage.now()
                    let start = ContinuousClock.now
                    try await inParallel(level) { for _ in 0..<perTask { try await once() } }
                    let wall = (ContinuousClock.now - start).secondsDouble * 1e9 / Double(perTask * level)
                    let used = ProcessUsage.now() - before
                    let counted = Double(perTask * level)
                    line += pad(String(format: "%7.0f %7.0f %6.1f", wall, used.cpuSeconds * 1e9 / counted, Double(used.contextSwitches) * 1000 / counted), 30)
                }
                print(line)
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// Runs `body` in `tasks` child tasks and waits for them.
    func inParallel(_ tasks: Int, _ body: @escaping @Sendable () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<tasks { group.addTask { try await body() } }
            try await group.waitForAll()
        }
    }
}
