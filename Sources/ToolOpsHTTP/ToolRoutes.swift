import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import ServiceContextModule
import ToolOpsAuth
import ToolOpsCore
import Tracing

/// The tool endpoints.
///
/// | path | answers |
/// |---|---|
/// | `POST /v1/tools/{namespace}/{name}` | a JSON object of arguments → `200` with the tool's JSON result |
/// | `GET /v1/tools` | the registered tools with their argument schemas |
///
/// A call runs through `pipeline` (observe → auth → rate limit → cache → retry → breaker →
/// bulkhead → timeout → the registry). The request's W3C `traceparent` continues in the call's
/// trace (through the bootstrapped propagator), the tenant comes from
/// ``Configuration/tenantHeader``, and the credential headers go to the auth middleware (and
/// no further). Failures are JSON `{"error": {"code", "message", "callId"}}` with the status
/// of ``HTTPErrorMapping``: a bad body is a 400, never a 500.
public struct ToolRoutes: Sendable {
    public struct Configuration: Sendable {
        /// Larger request bodies are refused with 413. Defaults to 1 MiB.
        public var maximumBodyBytes: Int
        /// Nesting deeper than this is refused with 400. Defaults to 64.
        public var maximumJSONDepth: Int
        /// The header naming the call's tenant (`nil`: none). Defaults to `X-Tenant-ID`. An
        /// authenticated identity's tenant replaces it.
        public var tenantHeader: String?
        /// Headers handed to the auth middleware as credentials; empty when no auth is
        /// configured, so they never reach a tool. Defaults to none.
        public var credentialHeaders: [String]
        /// The `WWW-Authenticate` challenge of a 401. Defaults to `Bearer realm="toolops"`.
        public var authenticationChallenge: String
        /// What reads propagated context (W3C `traceparent`) from request headers; `nil` (the
        /// default) uses the instrument bootstrapped in `InstrumentationSystem` at each request.
        public var instrument: (any Instrument)?

        public init(
            maximumBodyBytes: Int = 1 << 20, maximumJSONDepth: Int = 64, tenantHeader: String? = "X-Tenant-ID", credentialHeaders: [String] = [],
            authenticationChallenge: String = #"Bearer realm="toolops""#, instrument: (any Instrument)? = nil
        ) {
            self.instrument = instrument
            self.maximumBodyBytes = maximumBodyBytes
            self.maximumJSONDepth = maximumJSONDepth
            self.tenantHeader = tenantHeader
            self.credentialHeaders = credentialHeaders
            self.authenticationChallenge = authenticationChallenge
        }
    }

    public let registry: ToolRegistry
    public let pipeline: any ToolRunner
    public let configuration: Configuration
    let tenantField: HTTPField.Name?
    let credentialFields: [(String, HTTPField.Name)]
    let logger: Logger

    /// - Parameter pipeline: the chain that ends in `registry` (the registry itself for no policies).
    public init(registry: ToolRegistry, pipeline: any ToolRunner, configuration: Configuration = .init(), logger: Logger = Logger(label: "toolops.http")) {
        self.registry = registry
        self.pipeline = pipeline
        self.configuration = configuration
        self.tenantField = configuration.tenantHeader.flatMap { HTTPField.Name($0) }
        self.credentialFields = configuration.credentialHeaders.compactMap { name in HTTPField.Name(name).map { (name, $0) } }
        self.logger = logger
    }

    /// Adds the routes to `router` (or a route group).
    ///
    /// Each registered tool gets a route of its own (`v1/tools/demo/echo`) while there are at
    /// most ``constantRouteLimit``: the router matches constant paths for less than half of what
    /// capturing `:namespace/:name` costs it, and the call needs no id parsing or registry
    /// lookup. (The router tries sibling constants one after another, so a large registry —
    /// tools proxied from an MCP upstream — is served by the parameterised route alone.) The
    /// parameterised route answers the rest: tools the registry does not have (404) and ids
    /// that are not valid (404 naming the problem).
    public func register<Router: RouterMethods>(on router: Router) {
        for definition in registry.definitions.count <= Self.constantRouteLimit ? registry.tools : [] {
            let tool = definition.id
            router.post(RouterPath("v1/tools/\(tool.namespace)/\(tool.name)")) { request, _ in await call(request, tool: tool) }
        }
        router.post("v1/tools/:namespace/:name") { request, context in
            await call(request, namespace: context.parameters.get("namespace") ?? "", name: context.parameters.get("name") ?? "")
        }
        router.get("v1/tools") { _, _ in list() }
    }

    func list() -> Response {
        let tools: [JSONValue] = registry.tools.map { tool in
            [
                "id": .string(tool.id.description), "namespace": .string(tool.id.namespace), "name": .string(tool.id.name),
                "description": .string(tool.description), "inputSchema": tool.inputSchema,
                "tags": .array(tool.tags.sorted().map(JSONValue.string)),
            ]
        }
        return Self.json(.ok, ["tools": .array(tools)])
    }

    /// A call through the parameterised route: the id is checked first (404 when it is not a
    /// valid id or not a registered tool).
    func call(_ request: Request, namespace: String, name: String) async -> Response {
        let tool: ToolID
        do {
            do {
                tool = try ToolID(namespace: namespace, name: name)
            } catch {
                throw ToolOpsError(.toolNotFound, "no such tool (\(error.message))")
            }
            guard registry.definition(for: tool) != nil else { throw ToolOpsError(.toolNotFound, "no tool \(tool)") }
        } catch {
            return failure(error, callID: ToolCall.makeID())
        }
        return await call(request, tool: tool)
    }

    /// A call of a registered tool.
    func call(_ request: Request, tool: ToolID) async -> Response {
        let callID = ToolCall.makeID()
        do {
            let arguments = try await Self.arguments(of: request, configuration: configuration)
            var context = ServiceContext.topLevel
            (configuration.instrument ?? InstrumentationSystem.instrument).extract(request.headers, into: &context, using: HTTPFieldsExtractor())
            if let tenantField, let tenant = request.headers.value(tenantField) {
                guard Self.isAcceptableTenant(tenant) else {
                    throw ToolOpsError(.invalidInput, "the \(configuration.tenantHeader ?? "tenant") header must be 1…128 visible ASCII characters")
                }
                context.toolTenant = tenant
            }
            if !credentialFields.isEmpty {
                var headers: [String: String] = [:]
                for (name, field) in credentialFields { if let value = request.headers.value(field) { headers[name] = value } }
                context.authCredentials = AuthCredentials(headers: headers)
            }
            let call = try registry.prepare(ToolCall(id: callID, tool: tool, arguments: arguments, context: context))
            let result = try await pipeline.run(call)
            // Appended, not assigned: the dictionary-literal and subscript setters look for an
            // earlier field of the same name first.
            var headers = HTTPFields()
            headers.reserveCapacity(3)
            headers.append(HTTPField(name: .contentType, value: "application/json"))
            headers.append(HTTPField(name: Self.callIDField, value: callID))
            if let cache = result.metadata["cache"] { headers.append(HTTPField(name: Self.cacheField, value: cache)) }
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: try result.value.canonicalEncoding())))
        } catch {
            return failure(error, callID: callID)
        }
    }

    func failure(_ error: any Error, callID: String) -> Response {
        let mapped = HTTPErrorMapping.map(error, challenge: configuration.authenticationChallenge)
        if mapped.status.code >= 500, mapped.status != .serviceUnavailable, mapped.status != .gatewayTimeout {
            logger.warning("tool call failed", metadata: ["call_id": "\(callID)", "code": "\(mapped.code)", "status": "\(mapped.status.code)"])
        }
        return mapped.response(callID: callID)
    }

    /// The request's arguments: a JSON object (an empty body is `{}`), within the size and depth bounds.
    static func arguments(of request: Request, configuration: Configuration) async throws -> JSONValue {
        if let length = request.headers.value(.contentLength).flatMap(Int.init), length > configuration.maximumBodyBytes {
            throw HTTPErrorMapping.PayloadTooLarge(limit: configuration.maximumBodyBytes)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: configuration.maximumBodyBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw HTTPErrorMapping.PayloadTooLarge(limit: configuration.maximumBodyBytes)
        }
        let bytes = Array(buffer: buffer)
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return .object([:]) }
        let value: JSONValue
        do {
            value = try JSONValue(parsing: bytes, limits: .init(maximumDepth: configuration.maximumJSONDepth, maximumBytes: configuration.maximumBodyBytes))
        } catch {
            throw ToolOpsError(.invalidInput, "the body is not valid JSON: \(error.message)")
        }
        guard case .object = value else { throw ToolOpsError(.invalidInput, "the body must be a JSON object of arguments") }
        return value
    }

    static func isAcceptableTenant(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 128 && text.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// Registries of up to this many tools get a constant route per tool.
    public static let constantRouteLimit = 64

    static let callIDField = HTTPField.Name("X-ToolOps-Call-ID")!
    static let cacheField = HTTPField.Name("X-ToolOps-Cache")!

    static func json(_ status: HTTPResponse.Status, _ value: JSONValue, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        let bytes = (try? value.canonicalEncoding()) ?? Array(#"{"error":{"code":"internal","message":"unencodable response"}}"#.utf8)
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

extension HTTPFields {
    /// The value of the field `name`, several joined with ", " (cookies with "; ") — what
    /// HTTPFields' own `subscript(_:) -> String?` answers, without its cost when there is one
    /// (it builds a joined string every time: an allocation per lookup that showed in profiles).
    func value(_ name: HTTPField.Name) -> String? {
        var found: String?
        for field in self where field.name == name {
            guard let earlier = found else {
                found = field.value
                continue
            }
            found = earlier + (name == .cookie ? "; " : ", ") + field.value
        }
        return found
    }
}

/// Reads W3C trace context (and any other propagated fields) from request headers.
struct HTTPFieldsExtractor: Extractor {
    func extract(key: String, from carrier: HTTPFields) -> String? {
        guard let name = HTTPField.Name(key) else { return nil }
        return carrier.value(name)
    }
}
