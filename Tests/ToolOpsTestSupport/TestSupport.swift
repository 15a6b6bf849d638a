import Foundation
import Logging
import Synchronization

/// Helpers shared by the test targets (a library target, not a test target, so that each test
/// target can import it).

/// A thread-safe counter.
public final class Counter: Sendable {
    private let value = Mutex(0)
    public init() {}
    @discardableResult public func increment() -> Int { value.withLock { $0 += 1; return $0 } }
    public var current: Int { value.withLock { $0 } }
}

/// A flag set once, read from anywhere.
public final class Flag: Sendable {
    private let value = Mutex(false)
    public init() {}
    public func set() { value.withLock { $0 = true } }
    public var isSet: Bool { value.withLock { $0 } }
}

/// Tests assert on errors directly; connection warnings would only clutter the CI log.
public let quietLogger = Logger(label: "toolops.test", factory: { _ in SwiftLogNoOpLogHandler() })

/// The `toolops` executable built next to the test bundle (tests run it as separate processes).
public func toolopsBinary() -> String? {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("toolops").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    return nil
}
