import ArgumentParser
import Foundation
import ToolOpsAuth
import ToolOpsCore
import ToolOpsRedis
import ToolOpsRedisBackend
import ToolOpsServer

/// `toolops keys create|revoke`: API keys in Redis, used at once by every replica (a
/// revocation reaches them all within a pub/sub round trip). Only the key's digest is stored;
/// the key is printed once, at creation.
struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or revoke API keys in Redis (shared by every replica).", subcommands: [Create.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; prints it once (only its digest is stored).")

        @OptionGroup var target: RedisOptions

        @Option(help: "Who the key authenticates.")
        var principal: String

        @Option(help: "The key's id, for listing and revoking (default: a random one).")
        var id: String?

        @Option(help: "Tenant of the caller.")
        var tenant: String?

        @Option(help: "Comma-separated roles.")
        var roles: String = ""

        @Option(help: "Comma-separated scopes.")
        var scopes: String = ""

        @Option(help: "Lifetime, e.g. 720h (default: no expiry).")
        var expiresIn: String?

        func run() async throws {
            let (client, keys, configuration) = try target.connect()
            defer { client.shutdown() }
            let hasher = try configuration?.auth.apiKeyPepper.map { pepper throws -> APIKeyHasher in try APIKeyHasher.hmacSHA256(pepper: pepper) } ?? .sha256
            var expiry: ClockInstant?
            if let expiresIn {
                guard let lifetime = Self.duration(expiresIn), lifetime > .zero else { throw ValidationError("--expires-in takes a duration such as 720h") }
                expiry = WallClock().now + lifetime
            }
            let key = Self.newKey()
            let record = APIKeyRecord(
                id: id ?? "key-" + String(key.suffix(8)), digest: hasher.digest(key), principal: principal, tenant: tenant,
                roles: Self.list(roles), scopes: Self.list(scopes), expiresAt: expiry)
            try await RedisAPIKeyStore(client: client, keys: keys).put(record)
            print("id:  \(record.id)")
            print("key: \(key)")
            FileHandle.standardError.write(Data("Store the key now: it is not kept and cannot be shown again.\n".utf8))
        }

        /// `tk_` and 32 random characters of [A-Za-z0-9] (190 bits).
        static func newKey() -> String {
            let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
            var generator = SystemRandomNumberGenerator()
            return "tk_" + String((0..<32).map { _ in alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))] })
        }

        static func list(_ text: String) -> [String] {
            text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }

        static func duration(_ text: String) -> Duration? {
            let units: [(String, Int64)] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)]
            for (suffix, seconds) in units where text.hasSuffix(suffix) {
                guard let count = Int64(text.dropLast(suffix.count)), count > 0, count < 100_000_000 else { return nil }
                return .seconds(count * seconds)
            }
            return nil
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by its id, on every replica.")

        @OptionGroup var target: RedisOptions

        @Option(help: "The key's id.")
        var id: String

        func run() async throws {
            let (client, keys, _) = try target.connect()
            defer { client.shutdown() }
            guard try await RedisAPIKeyStore(client: client, keys: keys).revoke(id: id) else {
                throw ValidationError("no key with id \(id)")
            }
            print("revoked \(id)")
        }
    }
}
