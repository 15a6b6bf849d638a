import Foundation
import HTTPTypes
import Hummingbird
import MCP
import NIOCore
import ToolOpsMCP

/// `POST /mcp`: the Model Context Protocol over HTTP (streamable HTTP without sessions or
/// server-sent events: one JSON answer per request), each call through the pipeline with the
/// request's `Authorization` / `X-API-Key` headers as its credentials.
struct MCPRoutes: Sendable {
    let server: MCPToolServer
    /// The largest request body read (1 MiB).
    static let maximumBodyBytes = 1 << 20

    func register<Router: RouterMethods>(on router: Router) {
        router.post("mcp") { request, _ -> Response in
            await handle(request)
        }
    }

    func handle(_ request: Request) async -> Response {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maximumBodyBytes)
        } catch {
            return Self.response(.error(statusCode: 413, .invalidRequest("the request body exceeds \(Self.maximumBodyBytes) bytes")))
        }
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        let answer = await server.handle(MCP.HTTPRequest(method: "POST", headers: headers, body: Data(body.readableBytesView), path: "/mcp"))
        return Self.response(answer)
    }

    static func response(_ answer: MCP.HTTPResponse) -> Response {
        var fields = HTTPFields()
        for (name, value) in answer.headers {
            if let name = HTTPField.Name(name) { fields[name] = value }
        }
        let status = HTTPTypes.HTTPResponse.Status(code: answer.statusCode)
        if case .stream = answer {
            // Stateless transport: JSON answers only.
            return Response(status: .internalServerError)
        }
        guard let data = answer.bodyData else { return Response(status: status, headers: fields) }
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}
