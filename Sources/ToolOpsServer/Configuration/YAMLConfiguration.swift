import ToolOpsCore
import Yams

/// A YAML configuration file read into the same JSON tree a JSON file gives: mappings with
/// string keys, sequences, and scalars by their resolved YAML 1.1 tag (null, bool, int, float,
/// else string). Bounded: 16 levels and 100,000 values, so aliases that expand
/// exponentially ("billion laughs") are refused instead of filling memory.
enum YAMLConfiguration {
    static let maximumDepth = 16
    static let maximumValues = 100_000

    static func parse(_ text: String, file: String) throws(ToolOpsError) -> JSONValue {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ToolOpsError(.invalidConfiguration, "configuration file \(file) is not valid YAML: \(error)")
        }
        guard let node else { return .object([:]) }
        var budget = maximumValues
        return try convert(node, depth: 0, budget: &budget, file: file)
    }

    static func convert(_ node: Node, depth: Int, budget: inout Int, file: String) throws(ToolOpsError) -> JSONValue {
        budget -= 1
        guard budget >= 0, depth <= maximumDepth else {
            throw ToolOpsError(.invalidConfiguration, "configuration file \(file) is too large or too deep once its aliases are expanded")
        }
        switch node {
        case .scalar(let scalar):
            // The resolved tag's name (its description), as YAML 1.1's core schema resolves plain scalars.
            switch node.tag.description {
            case Tag.Name.null.rawValue: return .null
            case Tag.Name.bool.rawValue: return node.bool.map(JSONValue.bool) ?? .string(scalar.string)
            case Tag.Name.int.rawValue: return node.int.map { .integer(Int64($0)) } ?? .string(scalar.string)
            case Tag.Name.float.rawValue: return node.float.map(JSONValue.number) ?? .string(scalar.string)
            default: return .string(scalar.string)
            }
        case .sequence(let sequence):
            var items: [JSONValue] = []
            for item in sequence { items.append(try convert(item, depth: depth + 1, budget: &budget, file: file)) }
            return .array(items)
        case .mapping(let mapping):
            var members: [String: JSONValue] = [:]
            for (key, value) in mapping {
                guard case .scalar(let name) = key else {
                    throw ToolOpsError(.invalidConfiguration, "configuration file \(file) has a key that is not a string")
                }
                guard members[name.string] == nil else {
                    throw ToolOpsError(.invalidConfiguration, "configuration file \(file) repeats the key \(name.string)")
                }
                members[name.string] = try convert(value, depth: depth + 1, budget: &budget, file: file)
            }
            return .object(members)
        }
    }
}
