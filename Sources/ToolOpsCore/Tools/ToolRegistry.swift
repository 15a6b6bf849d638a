/// A tool as it is served: its id, what it does, the JSON schema of its arguments, its tags,
/// and the code that runs it.
public struct ToolDefinition: Sendable {
    public var id: ToolID
    public var description: String
    /// A JSON Schema object for the arguments (`type`, `properties`, `required`); checked by
    /// ``ToolRegistry`` before the tool runs (see ``ArgumentSchema``).
    public var inputSchema: JSONValue
    /// Tags every call of the tool carries (e.g. `write`: never cached).
    public var tags: Set<String>
    public var runner: any ToolRunner

    public init(
        _ id: ToolID, description: String, inputSchema: JSONValue = ["type": "object"], tags: Set<String> = [], runner: any ToolRunner
    ) {
        self.id = id
        self.description = description
        self.inputSchema = inputSchema
        self.tags = tags
        self.runner = runner
    }

    public init(
        _ id: ToolID, description: String, inputSchema: JSONValue = ["type": "object"], tags: Set<String> = [],
        _ body: @escaping @Sendable (ToolCall) async throws -> ToolResult
    ) {
        self.init(id, description: description, inputSchema: inputSchema, tags: tags, runner: ToolFunction(body))
    }
}

/// The tools a server offers, and the runner at the end of its pipeline: a call is checked
/// against its tool's argument schema (``ToolOpsError/Code/invalidInput`` naming the
/// problem), tagged with the tool's tags, and run; an unknown id is
/// ``ToolOpsError/Code/toolNotFound``.
///
/// ```swift
/// let tools = try ToolRegistry([
///     ToolDefinition(try ToolID("demo:echo"), description: "Returns its arguments") { call in ToolResult(call.arguments) },
/// ])
/// let pipeline = ToolPipeline(runner: tools) { … }
/// ```
public struct ToolRegistry: ToolRunner {
    public let definitions: [ToolID: ToolDefinition]
    /// The same definitions, each behind one reference: a call looks its tool up twice (to
    /// prepare and to run it), and copying a definition out of `definitions` retained and
    /// released each of its strings, its schema, its tags and its runner every time.
    private let entries: [ToolID: Entry]

    private final class Entry: Sendable {
        let definition: ToolDefinition
        init(_ definition: ToolDefinition) { self.definition = definition }
    }

    public init(_ definitions: [ToolDefinition] = []) throws(ToolOpsError) {
        var byID: [ToolID: ToolDefinition] = [:]
        for definition in definitions {
            guard byID[definition.id] == nil else { throw ToolOpsError(.invalidConfiguration, "tool \(definition.id) is registered twice") }
            _ = try ArgumentSchema(definition.inputSchema)
            byID[definition.id] = definition
        }
        self.definitions = byID
        self.entries = byID.mapValues(Entry.init)
    }

    /// The tools, sorted by id.
    public var tools: [ToolDefinition] { definitions.values.sorted { $0.id < $1.id } }

    public func definition(for id: ToolID) -> ToolDefinition? { definitions[id] }

    /// The call as its tool should see it (tags added, arguments checked) before the pipeline
    /// runs it, so policies see the tool's tags (the cache never stores a `write` tool).
    public func prepare(_ call: ToolCall) throws(ToolOpsError) -> ToolCall {
        guard let entry = entries[call.tool] else { throw ToolOpsError(.toolNotFound, "no tool \(call.tool)") }
        try ArgumentSchema.validate(call.arguments, against: entry.definition.inputSchema)
        if entry.definition.tags.isEmpty { return call }
        var call = call
        call.tags.formUnion(entry.definition.tags)
        return call
    }

    public func run(_ call: ToolCall) async throws -> ToolResult {
        guard let entry = entries[call.tool] else { throw ToolOpsError(.toolNotFound, "no tool \(call.tool)") }
        return try await entry.definition.runner.run(call)
    }
}

/// The part of JSON Schema that tool arguments are checked against: `type` (one or a list of
/// `object`, `array`, `string`, `integer`, `number`, `boolean`, `null`), `properties`,
/// `required`, `additionalProperties: false`, `items`, `enum`, `minimum`/`maximum`,
/// `minLength`/`maxLength`, `maxItems`. Other keywords are accepted and not enforced.
public struct ArgumentSchema: Sendable {
    let schema: JSONValue

    /// Checks that `schema` is an object (the only requirement of a schema here).
    public init(_ schema: JSONValue) throws(ToolOpsError) {
        guard case .object = schema else { throw ToolOpsError(.invalidConfiguration, "a tool's input schema must be a JSON object") }
        self.schema = schema
    }

    /// Throws ``ToolOpsError/Code/invalidInput`` naming the first problem (with its path).
    ///
    /// Arguments are checked twice only when they are wrong: a first pass answers yes or no
    /// without building a path or a message (or sorting members), which is all a valid call —
    /// nearly every call — costs; the second finds the first problem in member-name order.
    public static func validate(_ value: JSONValue, against schema: JSONValue, path: String = "arguments") throws(ToolOpsError) {
        if conforms(value, to: schema) { return }
        try report(value, against: schema, path: path)
        // The passes disagree (a rule checked by one only): refuse rather than let it through.
        assertionFailure("argument schema passes disagree")
        throw ToolOpsError(.invalidInput, "\(path) does not match the tool's input schema")
    }

    /// Whether `value` satisfies `schema`: exactly when ``report(_:against:path:)`` throws nothing.
    static func conforms(_ value: JSONValue, to schema: JSONValue) -> Bool {
        guard case .object(let rules) = schema else { return true }
        if let types = rules["type"] {
            switch types {
            case .string(let one):
                if !matches(value, type: one) { return false }
            case .array(let many):
                var listed = false
                for case .string(let type) in many {
                    if matches(value, type: type) {
                        listed = false
                        break
                    }
                    listed = true
                }
                if listed { return false }
            default:
                break
            }
        }
        if case .array(let options)? = rules["enum"], !options.contains(value) { return false }
        switch value {
        case .object(let members):
            if case .array(let required)? = rules["required"] {
                for case .string(let name) in required where members[name] == nil { return false }
            }
            let properties: [String: JSONValue]
            if case .object(let declared)? = rules["properties"] { properties = declared } else { properties = [:] }
            let closed = rules["additionalProperties"] == .bool(false)
            if properties.isEmpty && !closed { return true }
            for (name, member) in members {
                if let propertySchema = properties[name] {
                    if !conforms(member, to: propertySchema) { return false }
                } else if closed {
                    return false
                }
            }
        case .array(let items):
            if let maximum = rules["maxItems"]?.int64Value, items.count > maximum { return false }
            if let itemSchema = rules["items"] {
                for item in items where !conforms(item, to: itemSchema) { return false }
            }
        case .string(let text):
            let minimum = rules["minLength"]?.int64Value, maximum = rules["maxLength"]?.int64Value
            if minimum != nil || maximum != nil {
                let length = text.count
                if let minimum, length < minimum { return false }
                if let maximum, length > maximum { return false }
            }
        case .integer, .number:
            let number = value.doubleValue ?? 0
            if let minimum = rules["minimum"]?.doubleValue, number < minimum { return false }
            if let maximum = rules["maximum"]?.doubleValue, number > maximum { return false }
        default:
            break
        }
        return true
    }

    /// Throws for the first problem of `value` against `schema`, members in name order.
    static func report(_ value: JSONValue, against schema: JSONValue, path: String) throws(ToolOpsError) {
        guard case .object(let rules) = schema else { return }
        if let types = rules["type"] {
            let allowed: [String] = switch types {
            case .string(let one): [one]
            case .array(let many): many.compactMap(\.stringValue)
            default: []
            }
            if !allowed.isEmpty, !allowed.contains(where: { matches(value, type: $0) }) {
                throw ToolOpsError(.invalidInput, "\(path) must be \(allowed.map(article).joined(separator: " or ")), got \(kind(of: value))")
            }
        }
        if case .array(let options)? = rules["enum"], !options.contains(value) {
            throw ToolOpsError(.invalidInput, "\(path) must be one of the listed values")
        }
        switch value {
        case .object(let members):
            if case .array(let required)? = rules["required"] {
                for name in required.compactMap(\.stringValue) where members[name] == nil {
                    throw ToolOpsError(.invalidInput, "\(path).\(name) is required")
                }
            }
            let properties: [String: JSONValue]
            if case .object(let declared)? = rules["properties"] { properties = declared } else { properties = [:] }
            for (name, member) in members.sorted(by: { $0.key < $1.key }) {
                if let propertySchema = properties[name] {
                    try report(member, against: propertySchema, path: "\(path).\(name)")
                } else if case .bool(false)? = rules["additionalProperties"] {
                    throw ToolOpsError(.invalidInput, "\(path).\(clip(name)) is not an accepted argument")
                }
            }
        case .array(let items):
            if let maximum = rules["maxItems"]?.int64Value, items.count > maximum {
                throw ToolOpsError(.invalidInput, "\(path) has more than \(maximum) items")
            }
            if let itemSchema = rules["items"] {
                for (index, item) in items.enumerated() { try report(item, against: itemSchema, path: "\(path)[\(index)]") }
            }
        case .string(let text):
            let length = text.count
            if let minimum = rules["minLength"]?.int64Value, length < minimum {
                throw ToolOpsError(.invalidInput, "\(path) is shorter than \(minimum) characters")
            }
            if let maximum = rules["maxLength"]?.int64Value, length > maximum {
                throw ToolOpsError(.invalidInput, "\(path) is longer than \(maximum) characters")
            }
        case .integer, .number:
            let number = value.doubleValue ?? 0
            if let minimum = rules["minimum"]?.doubleValue, number < minimum { throw ToolOpsError(.invalidInput, "\(path) is below \(minimum.formattedBound)") }
            if let maximum = rules["maximum"]?.doubleValue, number > maximum { throw ToolOpsError(.invalidInput, "\(path) is above \(maximum.formattedBound)") }
        default:
            break
        }
    }

    static func matches(_ value: JSONValue, type: String) -> Bool {
        switch (type, value) {
        case ("object", .object), ("array", .array), ("string", .string), ("boolean", .bool), ("null", .null), ("integer", .integer),
            ("number", .integer), ("number", .number):
            return true
        case ("integer", .number(let double)):
            return double.rounded() == double
        default:
            return false
        }
    }

    static func article(_ type: String) -> String {
        switch type {
        case "object", "array", "integer": "an \(type)"
        case "null": "null"
        default: "a \(type)"
        }
    }

    static func kind(of value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool: "a boolean"
        case .integer: "an integer"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    static func clip(_ text: String) -> String { text.count > 40 ? String(text.prefix(40)) + "…" : text }
}

extension Double {
    fileprivate var formattedBound: String { rounded() == self && abs(self) < 1e15 ? String(Int64(self)) : String(self) }
}
