import ToolOpsRedis
import ToolOpsTestSupport

/// A client for `url` with quiet logs, after `change` adjusted its configuration.
func makeClient(_ url: String, _ change: (inout RedisConfiguration) -> Void = { _ in }) throws -> RedisClient {
    var configuration = try RedisConfiguration(url: url)
    change(&configuration)
    return try RedisClient(configuration: configuration, logger: quietLogger)
}
