/// Facts about this build of ToolOps.
public enum ToolOps {
    /// The library version, reported by `toolops --version` and in replica registrations.
    public static let version = "0.1.0"
}
