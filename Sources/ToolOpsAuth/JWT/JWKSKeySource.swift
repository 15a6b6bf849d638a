import AsyncHTTPClient
import Foundation
import JWTKit
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import ToolOpsCore

/// Keys from a JWKS document (RFC 7517) at a URL: fetched, cached, refreshed, and served stale
/// for a bounded time when the endpoint is down.
///
/// - A key set younger than ``Configuration/refreshInterval`` is used as is.
/// - A token whose `kid` the set does not know triggers a refetch (a key rotation), at most
///   once per ``Configuration/minimumRefetchInterval``: a flood of made-up `kid`s costs the
///   endpoint one request per interval, and concurrent callers share one fetch.
/// - When a fetch fails, the last good set keeps serving for ``Configuration/maximumStaleness``
///   after it was fetched; past that (or with no set yet) verification is
///   `providerUnavailable` — neither accepted nor refused. An unknown `kid` while the endpoint
///   is down is `providerUnavailable` too (the set may just not have been refetched).
/// - Each fetch is bounded in time (``Configuration/timeout``) and size
///   (``Configuration/maximumBytes``); RSA, EC and EdDSA keys are read, keys without a `kid`
///   or of other types are skipped (an empty `kid` is never a wildcard).
///
/// Run it as a `Service` (``run()``) to refresh the set in the background every
/// ``Configuration/refreshInterval``, so no call waits for a scheduled refetch.
public final class JWKSKeySource: Service {
    public struct Configuration: Sendable {
        /// The JWKS URL (https in production).
        public var url: String
        /// How long a fetched set is used before it is fetched again. Defaults to 5 minutes.
        public var refreshInterval: Duration
        /// The least time between fetches caused by unknown `kid`s. Defaults to 30 s.
        public var minimumRefetchInterval: Duration
        /// How long after its fetch a set keeps serving while the endpoint fails. Defaults to 1 hour.
        public var maximumStaleness: Duration
        /// Bound on one fetch. Defaults to 5 s.
        public var timeout: Duration
        /// Larger documents are refused. Defaults to 256 KiB.
        public var maximumBytes: Int

        public init(
            url: String, refreshInterval: Duration = .seconds(300), minimumRefetchInterval: Duration = .seconds(30),
            maximumStaleness: Duration = .seconds(3600), timeout: Duration = .seconds(5), maximumBytes: Int = 256 * 1024
        ) {
            self.url = url
            self.refreshInterval = refreshInterval
            self.minimumRefetchInterval = minimumRefetchInterval
            self.maximumStaleness = maximumStaleness
            self.timeout = timeout
            self.maximumBytes = maximumBytes
        }
    }

    struct State {
        var keys: JWTAuthenticator.Keys?
        var fetchedAt: ContinuousClock.Instant?
        var lastAttempt: ContinuousClock.Instant?
        /// The fetch in progress, shared by every caller that needs it.
        var inFlight: Task<JWTAuthenticator.Keys, any Error>?
    }

    public let configuration: Configuration
    private let state = Mutex(State())
    let fetchDocument: @Sendable (Configuration) async throws -> [UInt8]

    /// - Parameter fetch: how the document is fetched; defaults to an HTTP GET with
    ///   AsyncHTTPClient's shared client (tests may pass their own).
    public init(_ configuration: Configuration, fetch: (@Sendable (Configuration) async throws -> [UInt8])? = nil) {
        self.configuration = configuration
        self.fetchDocument = fetch ?? Self.httpGet
    }

    /// Fetches the set now (at start-up, so the first token does not wait); failures are thrown.
    public func prefetch() async throws(AuthError) {
        _ = try await refresh()
    }

    /// Refreshes the set every ``Configuration/refreshInterval`` (a failed refresh is retried at
    /// the next tick; the set in hand keeps serving within ``Configuration/maximumStaleness``),
    /// until graceful shutdown or cancellation.
    public func run() async throws {
        let interval = max(configuration.refreshInterval, .milliseconds(10))
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                _ = try? await self.refresh()
                do { try await Task.sleep(for: interval) } catch { return }
            }
        }
    }

    /// The keys to verify a token with `kid`.
    func keys(for kid: String?) async throws(AuthError) -> JWTAuthenticator.Keys {
        let now = ContinuousClock.now
        let (current, fetchedAt, lastAttempt) = state.withLock { ($0.keys, $0.fetchedAt, $0.lastAttempt) }
        let fresh = fetchedAt.map { now - $0 < configuration.refreshInterval } ?? false
        let known = kid.map { current?.ids.contains($0) ?? false } ?? (current?.hasAnonymousKey ?? false)
        if let current, fresh, known { return current }
        let mayRefetch = lastAttempt.map { now - $0 >= configuration.minimumRefetchInterval } ?? true
        if let current, fresh, !mayRefetch { return current }  // unknown kid, refetched lately: refused by the caller
        do {
            return try await refresh()
        } catch {
            guard let current, let fetchedAt, now - fetchedAt < configuration.maximumStaleness else { throw error }
            if !known { throw AuthError(.providerUnavailable, "token key id unknown and the JWKS endpoint cannot be reached") }
            return current
        }
    }

    /// One fetch shared by every caller waiting for it.
    private func refresh() async throws(AuthError) -> JWTAuthenticator.Keys {
        let task = state.withLock { state -> Task<JWTAuthenticator.Keys, any Error> in
            if let running = state.inFlight { return running }
            state.lastAttempt = .now
            let configuration = configuration
            let fetch = fetchDocument
            // Awaited by every caller below; it ends with the fetch's own timeout.
            let running = Task { try await Self.load(try await fetch(configuration), maximumBytes: configuration.maximumBytes) }
            state.inFlight = running
            return running
        }
        let result = await task.result
        state.withLock { state in
            if state.inFlight == task { state.inFlight = nil }
            if case .success(let keys) = result {
                state.keys = keys
                state.fetchedAt = .now
            }
        }
        switch result {
        case .success(let keys): return keys
        case .failure(let error as AuthError): throw error
        case .failure(let error): throw AuthError(.providerUnavailable, "the JWKS endpoint could not be read: \(error)")
        }
    }

    /// The usable keys of a document.
    static func load(_ bytes: [UInt8], maximumBytes: Int) async throws -> JWTAuthenticator.Keys {
        guard bytes.count <= maximumBytes else { throw AuthError(.providerUnavailable, "the JWKS document exceeds \(maximumBytes) bytes") }
        let set: JWKS
        do {
            set = try JSONDecoder().decode(JWKS.self, from: Data(bytes))
        } catch {
            throw AuthError(.providerUnavailable, "the JWKS document is not a key set")
        }
        let collection = JWTKeyCollection()
        var ids: Set<String> = []
        for key in set.keys {
            guard let id = key.keyIdentifier?.string, !id.isEmpty else { continue }
            do {
                try await collection.add(jwk: key, isDefault: false)
                ids.insert(id)
            } catch {
                continue  // a key type jwt-kit cannot use: skipped, the others serve
            }
        }
        guard !ids.isEmpty else { throw AuthError(.providerUnavailable, "the JWKS document has no usable key") }
        return JWTAuthenticator.Keys(collection, ids: ids)
    }

    /// GET with AsyncHTTPClient, bounded in time and size.
    @Sendable static func httpGet(_ configuration: Configuration) async throws -> [UInt8] {
        let request = HTTPClientRequest(url: configuration.url)
        let milliseconds = max(1, Int64(configuration.timeout.components.seconds) * 1000 + configuration.timeout.components.attoseconds / 1_000_000_000_000_000)
        let response = try await HTTPClient.shared.execute(request, timeout: .milliseconds(milliseconds))
        guard response.status == .ok else { throw AuthError(.providerUnavailable, "the JWKS endpoint answered \(response.status.code)") }
        let body = try await response.body.collect(upTo: configuration.maximumBytes)
        return Array(buffer: body)
    }
}
