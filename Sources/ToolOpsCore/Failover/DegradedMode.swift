
/// What a policy does while its shared store is unreachable.
public struct DegradedMode: Sendable, Hashable, CustomStringConvertible {
    package enum Kind: Hashable, Sendable { case failOpen, failClosed, local(Double) }
    package let kind: Kind
    /// Let every call through.
    public static let failOpen = DegradedMode(kind: .failOpen)
    /// Refuse every call (as rate limited, with a retry-after of the probe interval).
    public static let failClosed = DegradedMode(kind: .failClosed)
    /// Decide with the local fallback store, limits multiplied by `scale` — e.g. `1/N` with N
    /// replicas keeps the cluster near its total limit.
    public static func local(scale: Double = 1) -> DegradedMode { DegradedMode(kind: .local(scale)) }
    /// `fail-open`, `fail-closed` or `local(scale: 0.5)`, as shown in health details.
    public var description: String {
        switch kind {
        case .failOpen: "fail-open"
        case .failClosed: "fail-closed"
        case .local(let scale): "local(scale: \(scale))"
        }
    }
}
