import Testing
import ToolOpsCore
import ToolOpsHealth
import ToolOpsTestSupport

#if canImport(Glibc)
import Glibc
#endif

@Suite("Built-in checks", .timeLimit(.minutes(1)))
struct BuiltInCheckTests {
    /// A fake cgroup/procfs tree.
    struct Tree {
        let root = temporaryDirectory("cgroup")
        init() { _ = system("mkdir -p '\(root)/cg/memory' '\(root)/proc/self'") }
        func write(_ path: String, _ text: String) { writeFile("\(root)/\(path)", Array(text.utf8)) }
        func check(_ configuration: MemoryHealthCheck.Configuration = .init()) throws -> MemoryHealthCheck {
            var configuration = configuration
            configuration.cgroupRoot = "\(root)/cg"
            configuration.procRoot = "\(root)/proc"
            return try MemoryHealthCheck(configuration)
        }
        func remove() { _ = system("rm -rf '\(root)'") }
    }

    @Test func memoryAgainstTheCgroupV2LimitUsesTheWorkingSet() async throws {
        let tree = Tree()
        defer { tree.remove() }
        tree.write("cg/memory.max", "1000000\n")
        tree.write("cg/memory.current", "900000\n")
        tree.write("cg/memory.stat", "anon 500000\nfile 400000\ninactive_file 300000\nactive_file 100000\n")
        let check = try tree.check()
        var result = try await check.check()
        #expect(result.status == .healthy)  // 600000 / 1000000: page cache that can be dropped is not counted
        #expect(result.details["usedBytes"] == 600_000)
        #expect(result.details["source"] == "cgroup-v2")

        tree.write("cg/memory.stat", "inactive_file 100000\n")
        result = try await check.check()
        #expect(result.status == .degraded)  // 0.8
        tree.write("cg/memory.current", "1050000\n")
        result = try await check.check()
        #expect(result.status == .unhealthy)  // 0.95
    }

    @Test func memoryFallsBackToCgroupV1AndThenToTheHost() async throws {
        let tree = Tree()
        defer { tree.remove() }
        tree.write("cg/memory.max", "max\n")  // v2 without a limit
        tree.write("cg/memory.current", "123\n")
        tree.write("cg/memory/memory.limit_in_bytes", "2000000\n")
        tree.write("cg/memory/memory.usage_in_bytes", "1700000\n")
        tree.write("cg/memory/memory.stat", "total_inactive_file 50000\n")
        var usage = try #require(try tree.check().usage())
        #expect(usage.source == "cgroup-v1")
        #expect(usage.usedBytes == 1_650_000)
        #expect(try await tree.check().check().status == .degraded)

        tree.write("cg/memory/memory.limit_in_bytes", "9223372036854771712\n")  // v1's "no limit"
        tree.write("proc/meminfo", "MemTotal:       1000 kB\nMemFree:        10 kB\n")
        tree.write("proc/self/statm", "100 50 10 1 0 40 0\n")
        usage = try #require(try tree.check().usage())
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        #expect(usage.source == "host")
        #expect(usage.limitBytes == 1_024_000)
        #expect(usage.usedBytes == 50 * page)

        let limited = try tree.check(.init(limitBytes: 50 * page * 2))
        #expect(try await limited.check().status == .healthy)  // 0.5 of the configured limit
    }

    @Test func unreadableMemoryIsDegradedAndThresholdsAreValidated() async throws {
        let check = try MemoryHealthCheck(.init(cgroupRoot: "/nonexistent", procRoot: "/nonexistent"))
        #expect(try await check.check().status == .degraded)
        for (warning, critical) in [(0.0, 0.9), (0.9, 0.8), (0.8, 1.5), (-1, 0.5)] {
            #expect(throws: ToolOpsError.self) { try MemoryHealthCheck(.init(warningThreshold: warning, criticalThreshold: critical)) }
        }
        #expect(throws: ToolOpsError.self) { try MemoryHealthCheck(.init(limitBytes: 0)) }
        // The real machine: some source is readable and the ratio is sane.
        let real = try #require(try MemoryHealthCheck().usage())
        #expect(real.usedBytes > 0 && real.limitBytes > 0)
    }
}
