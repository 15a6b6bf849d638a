import ToolOpsCore

/// Whether a policy acts on its decisions.
public struct PolicyMode: Hashable, Sendable, CustomStringConvertible {
    let shadow: Bool
    /// Decide and act: reject, wait, cancel, retry. The default.
    public static let enforce = PolicyMode(shadow: false)
    /// Decide and report through the observer, but never block, delay, retry or cancel a
    /// call — for rolling out a new limit or breaker safely.
    public static let shadow = PolicyMode(shadow: true)
    public var isShadow: Bool { shadow }
    public var description: String { shadow ? "shadow" : "enforce" }
}
