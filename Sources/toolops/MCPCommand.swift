import ArgumentParser
import Foundation
import Logging
import MCP
import ServiceLifecycle
import ToolOpsCore
import ToolOpsMCP
import ToolOpsServer
import ToolOpsTelemetry
import UnixSignals

/// `toolops mcp`: the tools over MCP on standard input and output, through the pipeline built
/// from the same configuration as `toolops serve` — so several MCP server processes (one per
/// host or agent) share one Redis-backed limit, cache and breaker. With `-- command args…`,
/// proxy mode: that MCP server is started as a child and its tools are offered through the
/// pipeline under their own names.
struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "Serve the tools over the Model Context Protocol on stdin/stdout, every call through the pipeline.",
        discussion: """
            Configuration as for `toolops serve` (--config, TOOLOPS_* variables, --set); logs go to standard error. \
            Proxy mode: `toolops mcp --config c.json -- /path/to/mcp-server args…` puts the pipeline in front of that server.
            """)

    @Option(help: "A JSON or YAML configuration file.")
    var config: String?

    @Option(name: .customLong("set"), help: "Set a configuration key: --set policies.timeout=2s (repeatable).")
    var settings: [String] = []

    @Option(help: "Redis URL for shared state (state.backend=redis, state.redis.url).")
    var redis: String?

    @Option(help: "The caller's principal when no auth is configured (stdio carries no credentials).")
    var identity: String?

    @Option(help: "Namespace of the proxied server's tools (proxy mode).")
    var upstreamNamespace: String = "upstream"

    @Argument(parsing: .postTerminator, help: "Proxy mode: the MCP server to start and put the pipeline in front of.")
    var upstream: [String] = []

    func run() async throws {
        // Writing to a proxied child that died must be an error (EPIPE), not the end of us.
        signal(SIGPIPE, SIG_IGN)
        var overrides = settings
        if let redis { overrides += ["state.backend=redis", "state.redis.url=\(redis)"] }
        var configuration: ToolOpsConfiguration
        do {
            configuration = try ToolOpsConfiguration.load(ConfigurationSource(file: config, overrides: overrides))
        } catch {
            throw ValidationError(error.message)
        }
        var telemetrySettings = Telemetry.Configuration(
            serviceName: "toolops-mcp", logFormat: configuration.logFormat == "text" ? .text : .json, logLevel: configuration.logLevel)
        telemetrySettings.logToStandardError = true  // standard output is the protocol
        let telemetry: Telemetry
        do {
            telemetry = try Telemetry.make(telemetrySettings)
        } catch {
            throw ValidationError(error.message)
        }
        telemetry.bootstrap()
        var logger = Logger(label: "toolops.mcp")
        logger.logLevel = configuration.logLevel

        var tools: [ToolDefinition] = []
        var upstreamServer: MCPUpstream?
        if let command = upstream.first {
            let started = try await MCPUpstream.start(
                command: command, arguments: Array(upstream.dropFirst()), namespace: upstreamNamespace, logger: logger)
            upstreamServer = started
            do {
                tools = try await started.definitions()
            } catch {
                await started.stop()
                throw ValidationError("the upstream MCP server's tools could not be listed: \(error)")
            }
            configuration.demoTools = false
        }
        let replicaID = configuration.replica.id ?? "mcp-\(ProcessInfo.processInfo.processIdentifier)"
        let assembly = try ToolOpsAssembly(configuration, replicaID: replicaID, tools: tools, metricsFactory: telemetry.metricsFactory, logger: logger)
        let server = try MCPToolServer(
            registry: assembly.registry, pipeline: assembly.pipeline,
            configuration: .init(identity: identity, unprefixedNamespace: upstreamServer == nil ? nil : upstreamNamespace), logger: logger)
        logger.info("toolops mcp serving on stdio", metadata: ["tools": "\(assembly.registry.definitions.count)", "replica": "\(replicaID)"])
        // The stdio session ends the group when the client closes standard input; the
        // pipeline's services (Redis, flushers) then stop in reverse order.
        let session = MCPStdioSession(server: server)
        let services: [ServiceGroupConfiguration.ServiceConfiguration] =
            [.init(service: telemetry.service)] + assembly.services.map { .init(service: $0) }
            + [.init(service: session, successTerminationBehavior: .gracefullyShutdownGroup)]
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await upstreamServer?.stop()
            throw error
        }
        await upstreamServer?.stop()
    }
}

/// One MCP session on standard input and output, as a service.
struct MCPStdioSession: Service {
    let server: MCPToolServer

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await server.serve(StdioTransport())
        }
    }
}
