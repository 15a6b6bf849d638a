import Synchronization
import ToolOpsCore

/// Which values may become metric labels, so that callers cannot grow the number of series.
///
/// Prometheus keeps every series it has seen; a label taken from caller input (a tool name a
/// client made up, a tenant's breaker) would let any client grow the server's memory and the
/// scrape without limit. Values pass through one of these first.
public struct ToolLabels: Sendable {
    /// The label shared by every tool that is not registered (or, with ``firstSeen(maximum:)``,
    /// not among the first ones seen).
    public static let unregistered = "unregistered"

    enum Rule: Sendable {
        case registered(Set<ToolID>)
        case firstSeen(BoundedLabels)
    }

    let rule: Rule

    /// Only these tools get labels of their own (the tools a server registered).
    public static func registered(_ tools: some Sequence<ToolID>) -> ToolLabels {
        ToolLabels(rule: .registered(Set(tools)))
    }

    /// The first `maximum` distinct tools seen get labels of their own; later ones share
    /// ``unregistered``. For libraries that do not know their tools up front; defaults to 256.
    public static func firstSeen(maximum: Int = 256) -> ToolLabels {
        ToolLabels(rule: .firstSeen(BoundedLabels(maximum: maximum, overflow: unregistered)))
    }

    /// The label for `tool`.
    public func label(for tool: ToolID) -> String {
        switch rule {
        case .registered(let tools): return tools.contains(tool) ? tool.description : Self.unregistered
        case .firstSeen(let labels): return labels.label(for: tool.description)
        }
    }
}

/// Admits the first `maximum` distinct values as labels; every later one becomes `overflow`.
public final class BoundedLabels: Sendable {
    public let maximum: Int
    public let overflow: String
    private let admitted = Mutex<Set<String>>([])

    public init(maximum: Int, overflow: String = "other") {
        self.maximum = max(0, maximum)
        self.overflow = overflow
    }

    /// `value` if it is (or can still be) admitted, ``overflow`` otherwise.
    public func label(for value: String) -> String {
        admitted.withLock { admitted in
            if admitted.contains(value) { return value }
            guard admitted.count < maximum else { return overflow }
            admitted.insert(value)
            return value
        }
    }

    /// Values admitted so far.
    public var count: Int { admitted.withLock { $0.count } }
}
