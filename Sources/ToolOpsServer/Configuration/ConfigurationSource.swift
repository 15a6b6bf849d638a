import Foundation
import ToolOpsCore

/// Where configuration values come from, in rising precedence: a JSON or YAML file (`.yaml`,
/// `.yml`), the environment
/// (`TOOLOPS_` + the key path in upper snake case: `server.maxBodyBytes` →
/// `TOOLOPS_SERVER_MAX_BODY_BYTES`), and flags (`--set server.port=9090`).
///
/// Every key is read through a ``ConfigurationNode`` that remembers what was read, so keys that
/// nothing reads — misspelt, or from another version — are errors, in the file, the
/// environment and the flags alike. Errors name the key and where its value came from; values
/// read as secrets are never shown.
public struct ConfigurationSource: Sendable {
    /// The file's content (an object), or empty.
    public var file: JSONValue
    /// The file's path, for messages.
    public var fileName: String?
    /// `TOOLOPS_*` variables.
    public var environment: [String: String]
    /// `key.path` → value, from `--set`.
    public var overrides: [String: String]

    public static let environmentPrefix = "TOOLOPS_"

    /// - Parameters:
    ///   - file: a JSON configuration file (`nil`: none).
    ///   - environment: the process environment; only `TOOLOPS_*` variables are considered.
    ///   - overrides: `key.path=value` strings from `--set` flags.
    public init(file: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment, overrides: [String] = [])
        throws(ToolOpsError)
    {
        var content: JSONValue = .object([:])
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ToolOpsError(.invalidConfiguration, "configuration file \(file) cannot be read")
            }
            guard data.count <= 4 << 20 else { throw ToolOpsError(.invalidConfiguration, "configuration file \(file) is larger than 4 MiB") }
            if file.hasSuffix(".yaml") || file.hasSuffix(".yml") {
                content = try YAMLConfiguration.parse(String(decoding: data, as: UTF8.self), file: file)
            } else {
                do {
                    content = try JSONValue(parsing: Array(data), limits: .init(maximumDepth: 16, maximumBytes: 4 << 20))
                } catch {
                    throw ToolOpsError(.invalidConfiguration, "configuration file \(file) is not valid JSON: \(error.message)")
                }
            }
            guard case .object = content else { throw ToolOpsError(.invalidConfiguration, "configuration file \(file) must hold a JSON object") }
        }
        var parsed: [String: String] = [:]
        for override in overrides {
            guard let equals = override.firstIndex(of: "="), equals != override.startIndex else {
                throw ToolOpsError(.invalidConfiguration, "--set takes key.path=value")
            }
            parsed[String(override[..<equals])] = String(override[override.index(after: equals)...])
        }
        self.file = content
        self.fileName = file
        self.environment = environment.filter { $0.key.hasPrefix(Self.environmentPrefix) }
        self.overrides = parsed
    }

    /// The environment variable of a key path.
    public static func environmentName(_ path: [String]) -> String {
        var name = environmentPrefix
        for (index, segment) in path.enumerated() {
            if index > 0 { name += "_" }
            var previous: Character?
            for character in segment {
                // A word starts at an upper-case letter after a lower-case one: maxBodyBytes → MAX_BODY_BYTES, registrationTTL → REGISTRATION_TTL.
                if character.isUppercase, let previous, previous.isLowercase || previous.isNumber { name += "_" }
                name += character.uppercased()
                previous = character
            }
        }
        return name
    }
}

/// A read of the configuration below one key path; see ``ConfigurationSource``.
///
/// Not `Sendable`: a node is used by one loader while the configuration is built.
public final class ConfigurationNode {
    let source: ConfigurationSource
    let path: [String]
    let value: JSONValue?
    /// Keys read through this node and its children (dotted paths), shared by the whole tree.
    let read: Box

    final class Box {
        var keys: Set<String> = []
        var environment: Set<String> = []
        var overrides: Set<String> = []
    }

    public convenience init(_ source: ConfigurationSource) {
        self.init(source: source, path: [], value: source.file, read: Box())
    }

    init(source: ConfigurationSource, path: [String], value: JSONValue?, read: Box) {
        self.source = source
        self.path = path
        self.value = value
        self.read = read
    }

    func dotted(_ key: String) -> String { (path + [key]).joined(separator: ".") }

    /// The raw value of `key` and where it came from, flags over environment over file.
    func raw(_ key: String) -> (value: JSONValue, origin: String)? {
        let dotted = dotted(key)
        read.keys.insert(dotted)
        let environmentName = ConfigurationSource.environmentName(path + [key])
        if source.environment[environmentName] != nil { read.environment.insert(environmentName) }  // known, even when a flag wins
        if let text = source.overrides[dotted] {
            read.overrides.insert(dotted)
            return (.string(text), "--set \(dotted)")
        }
        if let text = source.environment[environmentName] {
            return (.string(text), environmentName)
        }
        guard case .object(let members)? = value, let member = members[key], member != .null else { return nil }
        return (member, source.fileName.map { "\($0): \(dotted)" } ?? dotted)
    }

    func fail(_ key: String, _ origin: String, _ problem: String) -> ToolOpsError {
        ToolOpsError(.invalidConfiguration, "\(dotted(key)) (\(origin)): \(problem)")
    }

    /// A string. Errors name the key and where its value came from, never the value (so
    /// secrets read here never show).
    public func string(_ key: String) throws(ToolOpsError) -> String? {
        guard let (value, origin) = raw(key) else { return nil }
        guard case .string(let text) = value else { throw fail(key, origin, "expected a string") }
        return text
    }

    public func string(_ key: String, default fallback: String) throws(ToolOpsError) -> String {
        try string(key) ?? fallback
    }

    /// One of `choices`.
    public func choice(_ key: String, _ choices: [String], default fallback: String) throws(ToolOpsError) -> String {
        guard let (value, origin) = raw(key) else { return fallback }
        guard case .string(let text) = value, choices.contains(text) else {
            throw fail(key, origin, "expected one of \(choices.joined(separator: ", "))")
        }
        return text
    }

    public func int(_ key: String, in range: ClosedRange<Int>) throws(ToolOpsError) -> Int? {
        guard let (value, origin) = raw(key) else { return nil }
        let number: Int64?
        switch value {
        case .integer(let integer): number = integer
        case .string(let text): number = Int64(text.trimmingCharacters(in: .whitespaces))
        default: number = nil
        }
        guard let number, let integer = Int(exactly: number) else { throw fail(key, origin, "expected an integer") }
        guard range.contains(integer) else { throw fail(key, origin, "must be within \(range.lowerBound)…\(range.upperBound), got \(integer)") }
        return integer
    }

    public func int(_ key: String, in range: ClosedRange<Int>, default fallback: Int) throws(ToolOpsError) -> Int {
        try int(key, in: range) ?? fallback
    }

    public func double(_ key: String, in range: ClosedRange<Double>, default fallback: Double) throws(ToolOpsError) -> Double {
        guard let (value, origin) = raw(key) else { return fallback }
        let number: Double?
        switch value {
        case .integer(let integer): number = Double(integer)
        case .number(let double): number = double
        case .string(let text): number = Double(text.trimmingCharacters(in: .whitespaces))
        default: number = nil
        }
        guard let number, number.isFinite else { throw fail(key, origin, "expected a number") }
        guard range.contains(number) else { throw fail(key, origin, "must be within \(range.lowerBound)…\(range.upperBound), got \(number)") }
        return number
    }

    public func bool(_ key: String, default fallback: Bool) throws(ToolOpsError) -> Bool {
        guard let (value, origin) = raw(key) else { return fallback }
        switch value {
        case .bool(let flag): return flag
        case .string("true"), .string("1"), .string("yes"): return true
        case .string("false"), .string("0"), .string("no"): return false
        default: throw fail(key, origin, "expected true or false")
        }
    }

    /// A duration: `"250ms"`, `"5s"`, `"2m"`, `"1h"`, or a number of seconds.
    public func duration(_ key: String, atLeast minimum: Duration = .zero) throws(ToolOpsError) -> Duration? {
        guard let (value, origin) = raw(key) else { return nil }
        let parsed: Duration?
        switch value {
        case .integer(let seconds): parsed = .seconds(seconds)
        case .number(let seconds) where seconds.isFinite && abs(seconds) < 1e9: parsed = .nanoseconds(Int64(seconds * 1e9))
        case .string(let text): parsed = Self.parseDuration(text)
        default: parsed = nil
        }
        guard let parsed else { throw fail(key, origin, "expected a duration such as 250ms, 5s, 2m or 1h") }
        guard parsed >= minimum else { throw fail(key, origin, "must be at least \(minimum)") }
        return parsed
    }

    public func duration(_ key: String, atLeast minimum: Duration = .zero, default fallback: Duration) throws(ToolOpsError) -> Duration {
        try duration(key, atLeast: minimum) ?? fallback
    }

    static func parseDuration(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            guard let number = Double(trimmed.dropLast(suffix.count)), number.isFinite, number >= 0, number * scale < 1e9 else { return nil }
            return .nanoseconds(Int64((number * scale * 1e9).rounded()))
        }
        guard let seconds = Double(trimmed), seconds.isFinite, seconds >= 0, seconds < 1e9 else { return nil }
        return .nanoseconds(Int64(seconds * 1e9))
    }

    /// A list of strings: a JSON array, or a comma-separated string (environment, flags).
    public func strings(_ key: String) throws(ToolOpsError) -> [String]? {
        guard let (value, origin) = raw(key) else { return nil }
        switch value {
        case .array(let items):
            var out: [String] = []
            for item in items {
                guard let text = item.stringValue else { throw fail(key, origin, "expected a list of strings") }
                out.append(text)
            }
            return out
        case .string(let text):
            return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        default:
            throw fail(key, origin, "expected a list of strings")
        }
    }

    /// The object at `key` (`nil` when absent). From the environment or a flag it is JSON text.
    public func object(_ key: String) throws(ToolOpsError) -> ConfigurationNode? {
        guard let (value, origin) = raw(key) else {
            // Absent in the file, but its members may still come from the environment or flags.
            let prefix = dotted(key)
            let environmentPrefix = ConfigurationSource.environmentName(path + [key]) + "_"
            let mentioned = source.overrides.keys.contains { $0.hasPrefix(prefix + ".") } || source.environment.keys.contains { $0.hasPrefix(environmentPrefix) }
            return mentioned ? ConfigurationNode(source: source, path: path + [key], value: .object([:]), read: read) : nil
        }
        let resolved = try Self.structured(value, key: key, origin: origin, node: self)
        guard case .object = resolved else { throw fail(key, origin, "expected an object") }
        return ConfigurationNode(source: source, path: path + [key], value: resolved, read: read)
    }

    /// The objects of the array at `key` (`[]` when absent).
    public func objects(_ key: String) throws(ToolOpsError) -> [ConfigurationNode] {
        guard let (value, origin) = raw(key) else { return [] }
        guard case .array(let items) = try Self.structured(value, key: key, origin: origin, node: self) else {
            throw fail(key, origin, "expected a list of objects")
        }
        var nodes: [ConfigurationNode] = []
        for (index, item) in items.enumerated() {
            guard case .object = item else { throw fail(key, origin, "item \(index) is not an object") }
            nodes.append(ConfigurationNode(source: source, path: path + ["\(key)[\(index)]"], value: item, read: read))
        }
        return nodes
    }

    static func structured(_ value: JSONValue, key: String, origin: String, node: ConfigurationNode) throws(ToolOpsError) -> JSONValue {
        guard case .string(let text) = value else { return value }
        do {
            return try JSONValue(parsing: text, limits: .init(maximumDepth: 8, maximumBytes: 1 << 20))
        } catch {
            throw node.fail(key, origin, "expected JSON")
        }
    }

    /// Names the first key of the file, the environment or the flags that nothing read.
    public func rejectUnknownKeys() throws(ToolOpsError) {
        var unknown: [String] = []
        func walk(_ value: JSONValue, _ path: [String]) {
            guard case .object(let members) = value else { return }
            for (key, member) in members {
                let dotted = (path + [key]).joined(separator: ".")
                if !read.keys.contains(dotted) {
                    unknown.append("\(source.fileName.map { "\($0): " } ?? "")\(dotted)")
                } else if case .object = member {
                    walk(member, path + [key])
                } else if case .array(let items) = member {
                    for (index, item) in items.enumerated() { walk(item, path + ["\(key)[\(index)]"]) }
                }
            }
        }
        walk(source.file, [])
        // Variables of the sections this configuration has (`TOOLOPS_SERVER_…`); others with the
        // prefix (`TOOLOPS_TEST_REDIS_URL`) belong to someone else.
        let sections = read.keys.filter { !$0.contains(".") }.map { ConfigurationSource.environmentName([$0]) + "_" }
        unknown += source.environment.keys.filter { name in
            !read.environment.contains(name) && sections.contains { name.hasPrefix($0) }
        }
        unknown += source.overrides.keys.filter { !read.overrides.contains($0) }.map { "--set \($0)" }
        if let first = unknown.sorted().first {
            throw ToolOpsError(.invalidConfiguration, "unknown configuration key \(first)" + (unknown.count > 1 ? " (and \(unknown.count - 1) more)" : ""))
        }
    }
}
