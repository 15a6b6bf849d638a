import ArgumentParser
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsServer

/// The Redis a command works on: `--redis`, or the configuration file's `state.redis` (URL,
/// password, TLS files, key prefix), else `redis://127.0.0.1:6379`.
struct RedisOptions: ParsableArguments {
    @Option(help: "Redis URL (default: state.redis.url from --config, else redis://127.0.0.1:6379).")
    var redis: String?

    @Option(help: "A configuration file to take the Redis URL, password, TLS files, key prefix (and API-key pepper) from.")
    var config: String?

    @Option(help: "Key prefix in Redis (default: state.redis.keyPrefix, else toolops).")
    var keyPrefix: String?

    /// A client (shut it down when done), the key schema, and the configuration if one was given.
    func connect() throws -> (client: RedisClient, keys: RedisKeySchema, configuration: ToolOpsConfiguration?) {
        var url = redis ?? "redis://127.0.0.1:6379"
        var prefix = keyPrefix ?? "toolops"
        var settings: ToolOpsConfiguration.Redis?
        var loaded: ToolOpsConfiguration?
        if let config {
            do { loaded = try ToolOpsConfiguration.load(ConfigurationSource(file: config)) } catch { throw ValidationError(error.message) }
            if case .redis(let fromFile)? = loaded?.backend {
                settings = fromFile
                url = redis ?? fromFile.url
                prefix = keyPrefix ?? fromFile.keyPrefix
            }
        }
        var configuration = try RedisConfiguration(url: url)
        configuration.connectTimeout = .seconds(3)
        configuration.commandTimeout = .seconds(10)
        if let settings {
            if let password = settings.password { configuration.password = password }
            if let file = settings.caFile { configuration.tls.caFile = file }
            if let file = settings.certificateFile { configuration.tls.certificateFile = file }
            if let file = settings.privateKeyFile { configuration.tls.privateKeyFile = file }
            if let name = settings.serverName { configuration.tls.serverName = name }
        }
        return (try RedisClient(configuration: configuration), RedisKeySchema(prefix: prefix), loaded)
    }
}
