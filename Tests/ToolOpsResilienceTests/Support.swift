import Synchronization
import ToolOpsCore
import ToolOpsResilience

func call(_ tool: String = "t:tool", tenant: String? = nil, identity: String? = nil) throws -> ToolCall {
    var context = ToolCall(tool: try ToolID(tool)).context
    context.toolTenant = tenant
    context.toolIdentity = identity
    return ToolCall(tool: try ToolID(tool), context: context)
}

let ok = ToolFunction { _ in ToolResult("ok") }

struct Boom: Error, Equatable { var n = 0 }

/// Collects observer events.
final class Events: Sendable {
    private let list = Mutex<[ResilienceEvent]>([])
    var observer: ResilienceObserver { { event in self.list.withLock { $0.append(event) } } }
    var all: [ResilienceEvent] { list.withLock { $0 } }
    var transitions: [String] {
        all.compactMap {
            if case .circuitStateChanged(_, let from, let to) = $0 { return "\(from.rawValue)->\(to.rawValue)" }
            return nil
        }
    }
}

final class Log: Sendable {
    private let entries = Mutex<[Int]>([])
    func append(_ value: Int) { entries.withLock { $0.append(value) } }
    var all: [Int] { entries.withLock { $0 } }
}
