import Foundation
import Testing
import ToolOpsCore
import ToolOpsServer
import ToolOpsTestSupport

/// The container files, checked by the tools that read them. There is no container engine on
/// these machines: nothing here builds or runs an image (see Docs/deployment.md).
@Suite("Dockerfile, docker-compose.yml and their configs")
struct ContainerFilesTests {
    static let repository = ClusterScriptTests.repository

    func check(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.currentDirectoryURL = Self.repository
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func theComposeFileIsValid() throws {
        let compose = try #require(["/usr/bin/docker-compose", "/usr/local/bin/docker-compose"].first { FileManager.default.isExecutableFile(atPath: $0) },
            "docker-compose must be installed (make test installs it)")
        let result = try check(compose, ["-f", "docker-compose.yml", "config", "-q"])
        #expect(result.status == 0, "\(result.output)")
        // The services the issue asks for, and the files they mount.
        let resolved = try check(compose, ["-f", "docker-compose.yml", "config", "--services"])
        #expect(Set(resolved.output.split(separator: "\n").map(String.init)) == ["redis", "toolops-1", "toolops-2", "toolops-3", "haproxy", "prometheus", "otel-collector"])
        for file in ["examples/compose.json", "deploy/haproxy.cfg", "deploy/prometheus.yml", "deploy/otel-collector.yaml"] {
            #expect(FileManager.default.fileExists(atPath: Self.repository.appendingPathComponent(file).path), "\(file)")
        }
    }

    @Test func haproxyAndPrometheusAcceptTheirConfigs() throws {
        let haproxy = try check("/usr/sbin/haproxy", ["-c", "-f", "deploy/haproxy.cfg"])
        #expect(haproxy.status == 0, "\(haproxy.output)")
        let promtool = try check("/usr/bin/promtool", ["check", "config", "deploy/prometheus.yml"])
        #expect(promtool.status == 0, "\(promtool.output)")
    }

    @Test func theImageServesWhatTheDockerfileCopies() throws {
        let dockerfile = try String(contentsOf: Self.repository.appendingPathComponent("Dockerfile"), encoding: .utf8)
        #expect(dockerfile.contains("FROM swift:6.3"))
        #expect(dockerfile.contains("libhiredis0.14") && dockerfile.contains("libssl3"))
        // The configuration baked into the image loads, and the container listens on every interface.
        #expect(dockerfile.contains("COPY examples/single-replica.json /etc/toolops/toolops.json"))
        let configuration = try ToolOpsConfiguration.load(
            ConfigurationSource(
                file: Self.repository.appendingPathComponent("examples/single-replica.json").path, environment: ["TOOLOPS_SERVER_HOST": "0.0.0.0"]))
        #expect(configuration.server.host == "0.0.0.0")
        let ignored = try String(contentsOf: Self.repository.appendingPathComponent(".dockerignore"), encoding: .utf8)
        #expect(ignored.contains(".build"))
    }
}
