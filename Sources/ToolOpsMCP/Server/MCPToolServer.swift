import Foundation
import Logging
import MCP
import ServiceContextModule
import Synchronization
import ToolOpsAuth
import ToolOpsCore

/// Serves ToolOps tools over the Model Context Protocol, every call through the pipeline:
/// `tools/list` lists the registry's tools with their JSON schema, `tools/call` becomes a
/// ``ToolOpsCore/ToolCall`` run by the pipeline (auth, rate limits, cache, breaker, bulkhead,
/// timeout, observe — whatever it holds).
///
/// ```swift
/// let assembly = try ToolOpsAssembly(configuration)       // or any registry and pipeline
/// let mcp = try MCPToolServer(registry: assembly.registry, pipeline: assembly.pipeline)
/// try await mcp.serve(StdioTransport())                    // until stdin closes
/// ```
///
/// Tool names: `namespace:name` is offered as `namespace_name` (MCP hosts accept letters,
/// digits, `_` and `-`), or as `name` for ``Configuration/unprefixedNamespace``; two tools
/// that would get one name are a configuration error.
///
/// Who calls: over HTTP (``handle(_:)``) the configured headers of the HTTP request —
/// `Authorization`, `X-API-Key` — are the credentials the auth middleware checks, and the
/// tenant header names the tenant. Transports that carry no request (stdio, in-memory) take
/// them from the call's `_meta["toolops/credentials"]` (an object of header names to values)
/// and `_meta["toolops/tenant"]`; with no auth configured, ``Configuration/identity`` names
/// the caller.
///
/// Errors: a call refused or failed by the pipeline is a tool error (`isError: true`) whose
/// text says what happened and when to retry (see ``MCPErrorMapping``); an unknown tool or
/// arguments that fail its schema are the JSON-RPC error "invalid params". The server keeps
/// serving either way.
public struct MCPToolServer: Sendable {
    public struct Configuration: Sendable {
        /// The server name announced to clients. Defaults to `toolops`.
        public var name: String
        /// The version announced to clients. Defaults to ``ToolOpsCore/ToolOps/version``.
        public var version: String
        /// Between namespace and name in MCP tool names. Defaults to `_`.
        public var separator: String
        /// The principal of calls over transports that carry no credentials, when the pipeline
        /// has no auth middleware to name one (e.g. the user who started a stdio server).
        /// Defaults to none.
        public var identity: String?
        /// HTTP request headers passed to the auth middleware as credentials (lowercase names).
        /// Defaults to `authorization` and `x-api-key`.
        public var credentialHeaders: [String]
        /// The HTTP header naming the tenant; `nil` for none. Defaults to `x-tenant-id`.
        public var tenantHeader: String?
        /// Browser origins allowed to call over HTTP, besides loopback ones (`http://localhost:3000`;
        /// `*` for any). A request with an `Origin` header from elsewhere is refused (403): a web
        /// page must not reach a local server through DNS rebinding. Clients that send no
        /// `Origin` (agents, curl) are not concerned. Defaults to none.
        public var allowedOrigins: [String] = []
        /// The longest an HTTP request waits for its answer. Defaults to 5 minutes.
        public var httpAnswerDeadline: Duration = .seconds(300)
        /// The deepest nesting of arguments accepted (as the HTTP endpoint's `maximumJSONDepth`).
        /// Defaults to 64.
        public var maximumArgumentDepth: Int = 64
        /// Tools of this namespace keep their bare name (a proxied server's tools keep the
        /// names its clients know). Defaults to none.
        public var unprefixedNamespace: String?

        public init(
            name: String = "toolops", version: String = ToolOps.version, separator: String = "_", identity: String? = nil,
            credentialHeaders: [String] = ["authorization", "x-api-key"], tenantHeader: String? = "x-tenant-id",
            unprefixedNamespace: String? = nil
        ) {
            self.unprefixedNamespace = unprefixedNamespace
            self.name = name
            self.version = version
            self.separator = separator
            self.identity = identity
            self.credentialHeaders = credentialHeaders
            self.tenantHeader = tenantHeader
        }
    }

    /// The `_meta` key holding credentials (an object: header name → value) on transports without HTTP.
    public static let credentialsMetaKey = "toolops/credentials"
    /// The `_meta` key holding the tenant on transports without HTTP.
    public static let tenantMetaKey = "toolops/tenant"

    public let registry: ToolRegistry
    public let pipeline: any ToolRunner
    public let configuration: Configuration
    /// MCP name → tool, and back.
    private let tools: [String: ToolID]
    private let names: [ToolID: String]
    /// The tool list, made once.
    private let listing: [Tool]
    let logger: Logger
    /// Calls being answered now, over every connection of this server.
    private let inFlight = InFlightCalls()

    /// - Parameters:
    ///   - registry: the tools served.
    ///   - pipeline: the chain that ends in `registry` (the registry itself for no policies).
    /// - Throws: ``ToolOpsCore/ToolOpsError/Code/invalidConfiguration`` when two tools map to one MCP name.
    public init(
        registry: ToolRegistry, pipeline: any ToolRunner, configuration: Configuration = .init(),
        logger: Logger = Logger(label: "toolops.mcp")
    ) throws(ToolOpsError) {
        self.registry = registry
        self.pipeline = pipeline
        self.configuration = configuration
        self.logger = logger
        var tools: [String: ToolID] = [:]
        var names: [ToolID: String] = [:]
        for definition in registry.tools {
            let name =
                definition.id.namespace == configuration.unprefixedNamespace
                ? definition.id.name : definition.id.namespace + configuration.separator + definition.id.name
            if let other = tools[name] {
                throw ToolOpsError(
                    .invalidConfiguration, "tools \(other) and \(definition.id) would both be offered over MCP as '\(name)'; choose another separator")
            }
            tools[name] = definition.id
            names[definition.id] = name
        }
        self.tools = tools
        self.names = names
        self.listing = registry.tools.map { definition in
            Tool(
                name: names[definition.id] ?? definition.id.description, title: definition.id.description,
                description: definition.description.isEmpty ? nil : definition.description, inputSchema: definition.inputSchema.mcpValue,
                annotations: .init(readOnlyHint: nil, destructiveHint: definition.tags.contains("write") ? true : nil))
        }
    }

    /// The MCP name of `tool`, if it is served.
    public func mcpName(of tool: ToolID) -> String? { names[tool] }

    /// The tools as MCP lists them.
    public var mcpTools: [Tool] { listing }

    /// Registers the `tools/list` and `tools/call` handlers on `server`.
    public func register(on server: Server) async {
        let listing = self.listing
        await server.withMethodHandler(ListTools.self) { _ in ListTools.Result(tools: listing) }
        await server.withMethodHandler(CallTool.self) { parameters in
            try await self.call(parameters, http: Server.currentHandlerContext?.httpContext)
        }
    }

    /// A server announcing the tools capability, with the handlers registered.
    public func makeServer() async -> Server {
        let server = Server(name: configuration.name, version: configuration.version, capabilities: .init(tools: .init(listChanged: false)))
        await register(on: server)
        return server
    }

    /// Serves one connection (stdio: until standard input closes) and stops the server once
    /// the calls still running have answered (at most ``Configuration/httpAnswerDeadline``).
    public func serve(_ transport: any Transport) async throws {
        let server = await makeServer()
        try await server.start(transport: transport)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await server.waitUntilCompleted()
                // Input closed: the requests read before it still get their answers.
                let deadline = ContinuousClock.now + configuration.httpAnswerDeadline
                while inFlight.count > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(10))
                }
            }
            group.addTask {
                // Cancelled (graceful shutdown): stop the server, which ends the session above.
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                await server.stop()
            }
            await group.next()
            group.cancelAll()
        }
        await server.stop()
    }

    /// Answers one MCP message sent over HTTP (`POST`, the streamable HTTP transport without
    /// sessions): each request gets a server of its own, so clients never share JSON-RPC ids.
    /// The HTTP request's credential and tenant headers reach the pipeline. A browser `Origin`
    /// not allowed is refused (403); a message that is neither a request nor a notification
    /// is refused (400); no answer within ``Configuration/httpAnswerDeadline`` is a 504.
    public func handle(_ request: HTTPRequest) async -> HTTPResponse {
        if let origin = request.header("origin"), !isAllowed(origin: origin) {
            return .error(statusCode: 403, .invalidRequest("Forbidden: Origin not allowed"))
        }
        if let problem = Self.problem(in: request.body) {
            return .error(statusCode: 400, .invalidRequest(problem))
        }
        let server = await makeServer()
        let transport = StatelessHTTPServerTransport(validationPipeline: StandardValidationPipeline(validators: [
            AcceptHeaderValidator(mode: .jsonOnly), ContentTypeValidator(), ProtocolVersionValidator(),
        ]))
        do {
            try await server.start(transport: transport)
        } catch {
            return .error(statusCode: 500, .internalError("the MCP server could not start"))
        }
        let deadline = configuration.httpAnswerDeadline
        let response = await withTaskGroup(of: HTTPResponse?.self) { group in
            group.addTask { await transport.handleRequest(request) }
            group.addTask {
                try? await Task.sleep(for: deadline)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            // Stopping the server ends a wait the deadline cut short.
            if first == nil { await server.stop() }
            return first
        }
        await server.stop()
        return response ?? .error(statusCode: 504, .internalError("no answer within \(deadline)"))
    }

    /// Why an HTTP body is not an MCP request or notification (or a batch of them), if it is
    /// not: a message with both `method` and `result`/`error` would be taken for a reply and
    /// never answered. (Other malformed bodies get the SDK's own JSON-RPC errors.)
    static func problem(in body: Data?) -> String? {
        guard let body, let parsed = try? JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) else { return nil }
        let messages: [Any] = (parsed as? [Any]) ?? [parsed]
        for case let message as [String: Any] in messages {
            if message["method"] != nil && (message["result"] != nil || message["error"] != nil) {
                return "a message has both a method and a result or error"
            }
        }
        return nil
    }

    /// Loopback origins, and the configured ones.
    func isAllowed(origin: String) -> Bool {
        if configuration.allowedOrigins.contains("*") || configuration.allowedOrigins.contains(origin) { return true }
        guard let host = URLComponents(string: origin)?.host?.lowercased() else { return false }
        return host == "localhost" || host == "127.0.0.1" || host == "::1" || host == "[::1]"
    }

    /// One `tools/call`: the tool, its arguments and its caller as a ``ToolCall`` through the pipeline.
    func call(_ parameters: CallTool.Parameters, http: HTTPRequest?) async throws -> CallTool.Result {
        guard let tool = tools[parameters.name] else {
            throw MCPError.invalidParams("Unknown tool: \(ToolIDText.clip(parameters.name))")
        }
        if parameters.arguments?.values.contains(where: { Self.deeper(than: configuration.maximumArgumentDepth - 1, $0) }) == true {
            throw MCPError.invalidParams("arguments nested deeper than \(configuration.maximumArgumentDepth) levels")
        }
        let arguments = JSONValue.object((parameters.arguments ?? [:]).mapValues(JSONValue.init(mcp:)))
        var context = ServiceContext.topLevel
        var credentials: [String: String] = [:]
        if let http {
            for name in configuration.credentialHeaders { if let value = http.header(name) { credentials[name] = value } }
            if let header = configuration.tenantHeader, let tenant = http.header(header) { context.toolTenant = tenant }
        } else {
            if case .object(let fields)? = parameters._meta?[Self.credentialsMetaKey] {
                for (name, value) in fields { if let text = value.stringValue { credentials[name.lowercased()] = text } }
            }
            if let tenant = parameters._meta?[Self.tenantMetaKey]?.stringValue { context.toolTenant = tenant }
            if let identity = configuration.identity { context.toolIdentity = identity }
        }
        if !credentials.isEmpty { context.authCredentials = AuthCredentials(headers: credentials) }
        if let tenant = context.toolTenant, !(1...128).contains(tenant.utf8.count) || !tenant.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
            throw MCPError.invalidParams("the tenant must be 1…128 visible ASCII characters")
        }
        let call: ToolCall
        do throws(ToolOpsError) {
            call = try registry.prepare(ToolCall(tool: tool, arguments: arguments, context: context))
        } catch {
            // Arguments that fail the tool's schema: the caller's mistake, said as such.
            throw MCPError.invalidParams("Invalid arguments for \(parameters.name): \(error.message)")
        }
        inFlight.add(1)
        defer { inFlight.add(-1) }
        do {
            let result = try await pipeline.run(call)
            return MCPErrorMapping.result(result, definition: registry.definition(for: tool))
        } catch {
            let mapped = MCPErrorMapping.result(for: error)
            if (error as? ToolOpsError)?.code == .invalidInput {
                throw MCPError.invalidParams(mapped.text)
            }
            return mapped.result
        }
    }
}

extension MCPToolServer {
    /// Whether `value` nests deeper than `limit` levels (stops looking there).
    static func deeper(than limit: Int, _ value: MCP.Value) -> Bool {
        switch value {
        case .array(let values): return limit <= 0 ? true : values.contains { deeper(than: limit - 1, $0) }
        case .object(let members): return limit <= 0 ? true : members.values.contains { deeper(than: limit - 1, $0) }
        default: return false
        }
    }
}

/// A count of calls being answered.
final class InFlightCalls: Sendable {
    private let value = Atomic<Int>(0)
    var count: Int { value.load(ordering: .relaxed) }
    func add(_ delta: Int) { value.add(delta, ordering: .relaxed) }
}

enum ToolIDText {
    static func clip(_ text: String) -> String { text.count > 80 ? String(text.prefix(80)) + "…" : text }
}
