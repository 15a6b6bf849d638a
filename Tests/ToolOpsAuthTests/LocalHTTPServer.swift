import Hummingbird
import Testing
import ToolOpsTestSupport

/// Runs `app` (listening on a port it reports through `port` once running) until `body`
/// returns; `body` gets the port. The JWKS and introspection endpoints of these tests use it.
func withRunningServer(
    _ app: some ApplicationProtocol, port: @escaping @Sendable () -> Int?, _ body: (Int) async throws -> Void
) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await app.runService(gracefulShutdownSignals: []) }
        defer { group.cancelAll() }
        guard await waitFor(seconds: 5, { port() != nil }) != nil, let port = port() else {
            Issue.record("the test's HTTP server did not start")
            return
        }
        try await body(port)
    }
}
