import Synchronization
import ToolOpsCore

/// Built-in tools, so a fresh server has something to call and the policies something to act
/// on (`tools.demo`, on by default):
///
/// | tool | arguments | does |
/// |---|---|---|
/// | `demo:echo` | any object | returns its arguments |
/// | `demo:sleep` | `ms` (0…60,000) | sleeps, then returns `{"sleptMs": ms}` |
/// | `demo:flaky` | `failureRate` (0…1), `fail` (bool) | fails when told to, or with that probability |
/// | `demo:compute` | `n` (2…5,000,000) | counts the primes below `n` (deterministic and slow enough that caching shows); says which replica computed it |
/// | `demo:counter` | `name` | adds one to a counter of this replica and returns it (a side effect: tagged `write`, never cached) |
public final class DemoTools: Sendable {
    /// What `demo:flaky` throws.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String { "demo:flaky failed as asked" }
    }

    /// The replica named in `demo:compute`'s answers.
    public let replicaID: String
    private let counters = Mutex<[String: Int64]>([:])
    private let computations = Atomic<Int>(0)

    public init(replicaID: String) {
        self.replicaID = replicaID
    }

    /// How many times `demo:compute` ran here (cache hits do not run it).
    public var computeRuns: Int { computations.load(ordering: .relaxed) }

    public func definitions() throws(ToolOpsError) -> [ToolDefinition] {
        [
            ToolDefinition(try ToolID("demo:echo"), description: "Returns its arguments.", inputSchema: ["type": "object"]) { call in
                ToolResult(call.arguments)
            },
            ToolDefinition(
                try ToolID("demo:sleep"), description: "Sleeps for ms milliseconds.",
                inputSchema: [
                    "type": "object", "required": ["ms"], "additionalProperties": false,
                    "properties": ["ms": ["type": "integer", "minimum": 0, "maximum": 60_000]],
                ]
            ) { call in
                let milliseconds = call.arguments["ms"]?.int64Value ?? 0
                try await Task.sleep(for: .milliseconds(milliseconds))
                return ToolResult(["sleptMs": .integer(milliseconds)])
            },
            ToolDefinition(
                try ToolID("demo:flaky"), description: "Fails when told to (fail: true) or with probability failureRate.",
                inputSchema: [
                    "type": "object", "additionalProperties": false,
                    "properties": ["failureRate": ["type": "number", "minimum": 0, "maximum": 1], "fail": ["type": "boolean"]],
                ]
            ) { call in
                let rate = call.arguments["failureRate"]?.doubleValue ?? 0
                if call.arguments["fail"] == .bool(true) || Double.random(in: 0..<1) < rate { throw Failure() }
                return ToolResult(["ok": true])
            },
            ToolDefinition(
                try ToolID("demo:compute"), description: "Counts the primes below n.",
                inputSchema: [
                    "type": "object", "required": ["n"], "additionalProperties": false,
                    "properties": ["n": ["type": "integer", "minimum": 2, "maximum": 5_000_000]],
                ]
            ) { [self] call in
                computations.add(1, ordering: .relaxed)
                let n = Int(call.arguments["n"]?.int64Value ?? 2)
                return ToolResult(["n": .integer(Int64(n)), "primes": .integer(Int64(Self.primes(below: n))), "computedBy": .string(self.replicaID)])
            },
            ToolDefinition(
                try ToolID("demo:counter"), description: "Adds one to a named counter of this replica.",
                inputSchema: [
                    "type": "object", "additionalProperties": false,
                    "properties": ["name": ["type": "string", "minLength": 1, "maxLength": 64]],
                ], tags: ["write"]
            ) { [self] call in
                let name = call.arguments["name"]?.stringValue ?? "default"
                let value = counters.withLock { counters -> Int64 in
                    if counters[name] == nil, counters.count >= 1_000 { counters.removeAll() }  // bounded: a demo, not a database
                    counters[name, default: 0] += 1
                    return counters[name] ?? 0
                }
                return ToolResult(["name": .string(name), "value": .integer(value)])
            },
        ]
    }

    /// Sieve of Eratosthenes.
    static func primes(below n: Int) -> Int {
        guard n > 2 else { return 0 }
        var composite = [Bool](repeating: false, count: n)
        var count = 0
        for candidate in 2..<n where !composite[candidate] {
            count += 1
            var multiple = candidate &* candidate
            while multiple < n {
                composite[multiple] = true
                multiple += candidate
            }
        }
        return count
    }
}
