import Foundation
import Testing
import ToolOpsCore
@testable import ToolOpsResilience

/// The shared state directory under hostile names and damaged files.
@Suite("File state directory", .timeLimit(.minutes(1)))
struct FileStateDirectoryTests {
    @Test func fileNamesAreSafeForAnyKey() throws {
        let directory = try FileStateDirectory(path: temporaryDirectory())
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        let long1 = String(repeating: "k", count: 300) + "1"
        let long2 = String(repeating: "k", count: 300) + "2"
        let names = [".", "..", ".hidden", "a/b", "../../etc/passwd", long1, long2, "tenant:ünïcode"].map(directory.fileName(for:))
        for name in names {
            #expect(!name.contains("/") && name != "." && name != ".." && name.utf8.count <= 200, "\(name)")
        }
        // Hashed names keep long keys with a common prefix apart; dots never lead to "." or "..".
        #expect(names[5] != names[6])
        #expect(names[0].contains("~") && names[1].contains("~") && names[2].contains("~"))
        #expect(Set(names).count == names.count)
        // And every one of them is usable: a state is written and read back under it.
        for key in [".", "..", "../../etc/passwd", long1] {
            try directory.update([key]) { $0[0] = ["n": 1] }
            #expect(try directory.update([key]) { $0[0] } == ["n": 1])
        }
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/../etc"))
    }

    @Test func stateFromAnotherBootIsDiscarded() throws {
        let directory = try FileStateDirectory(path: temporaryDirectory())
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        try directory.update(["k"]) { $0[0] = ["tat": 123] }
        #expect(try directory.update(["k"]) { $0[0] } == ["tat": 123])
        // The same file as a previous boot left it: monotonic timestamps from then mean nothing now.
        let file = "\(directory.path)/\(directory.fileName(for: "k")).state"
        try Data(#"{"boot":"another-boot","state":{"tat":123}}"#.utf8).write(to: URL(fileURLWithPath: file))
        #expect(try directory.update(["k"]) { $0[0] } == nil)
    }

    @Test func anUnopenableLockFileIsATypedOutage() async throws {
        let directory = try FileStateDirectory(path: temporaryDirectory())
        defer { try? FileManager.default.removeItem(atPath: directory.path) }
        // A directory where the lock file should be (root ignores permissions, not file types).
        let lock = "\(directory.path)/\(directory.fileName(for: "k")).lock"
        try FileManager.default.createDirectory(atPath: lock, withIntermediateDirectories: true)
        let error = #expect(throws: ToolOpsError.self) { try directory.update(["k"]) { $0[0] = ["n": 1] } }
        #expect(error?.code == .storeUnavailable)
        #expect(error?.message.contains(lock) == true)
        // A file store on it reports the outage instead of crashing or deciding.
        let store = try FileRateLimitStore(directory: directory.path)
        let request = RateLimitRequest(key: "k", limit: try RateLimit(rate: 1))
        let outage = await #expect(throws: ToolOpsError.self) { try await store.acquire([request], maxWait: .zero) }
        #expect(outage?.code == .storeUnavailable)
    }
}
