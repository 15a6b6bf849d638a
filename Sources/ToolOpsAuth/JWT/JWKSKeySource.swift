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
        /// When the set in hand was fetched: locally (for its age) and on the wall clock (to
        /// compare with documents other replicas published).
        var fetchedAt: ContinuousClock.Instant?
        var fetchedAtWall: ClockInstant?
        var lastAttempt: ContinuousClock.Instant?
        /// Whether the last attempt to renew the set failed (an unknown `kid` is then undecidable).
        var lastAttemptFailed = false
        /// The refresh in progress, shared by every caller that needs it.
        var inFlight: Task<Renewal, any Error>?
    }

    /// What a refresh brought: a set (fetched here or published by another replica), or nothing
    /// new because another replica holds the right to fetch and published nothing in time.
    enum Renewal: Sendable {
        case renewed(JWTAuthenticator.Keys, fetchedAt: ClockInstant)
        case unchanged
    }

    public let configuration: Configuration
    private let state = Mutex(State())
    let fetchDocument: @Sendable (Configuration) async throws -> [UInt8]
    let shared: (any JWKSDocumentStore)?
    let wallClock: any ToolOpsClock

    /// - Parameters:
    ///   - shared: where the replicas share fetched documents and the right to fetch
    ///     (`RedisBackend.makeJWKSDocumentStore()`); `nil` fetches on this replica's own budget.
    ///   - fetch: how the document is fetched; defaults to an HTTP GET with AsyncHTTPClient's
    ///     shared client (tests may pass their own).
    public init(
        _ configuration: Configuration, shared: (any JWKSDocumentStore)? = nil, wallClock: any ToolOpsClock = WallClock(),
        fetch: (@Sendable (Configuration) async throws -> [UInt8])? = nil
    ) {
        self.configuration = configuration
        self.shared = shared
        self.wallClock = wallClock
        self.fetchDocument = fetch ?? Self.httpGet
    }

    /// Fetches the set now (at start-up, so the first token does not wait); failures are thrown.
    public func prefetch() async throws(AuthError) {
        _ = try await refresh(for: nil)
    }

    /// Refreshes the set every ``Configuration/refreshInterval`` (a failed refresh is retried at
    /// the next tick; the set in hand keeps serving within ``Configuration/maximumStaleness``),
    /// until graceful shutdown or cancellation.
    public func run() async throws {
        let interval = max(configuration.refreshInterval, .milliseconds(10))
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                _ = try? await self.refresh(for: nil)
                do { try await Task.sleep(for: interval) } catch { return }
            }
        }
    }

    /// The keys to verify a token with `kid`.
    func keys(for kid: String?) async throws(AuthError) -> JWTAuthenticator.Keys {
        let now = ContinuousClock.now
        let (current, fetchedAt, lastAttempt, lastFailed) = state.withLock { ($0.keys, $0.fetchedAt, $0.lastAttempt, $0.lastAttemptFailed) }
        let fresh = fetchedAt.map { now - $0 < configuration.refreshInterval } ?? false
        let known = kid.map { current?.ids.contains($0) ?? false } ?? (current?.hasAnonymousKey ?? false)
        if let current, fresh, known { return current }
        let withinStaleness = fetchedAt.map { now - $0 < configuration.maximumStaleness } ?? false
        let mayRefetch = lastAttempt.map { now - $0 >= configuration.minimumRefetchInterval } ?? true
        if !mayRefetch {
            // Renewed (or tried) lately: no new request until the interval has passed.
            if let current, withinStaleness {
                if !known, lastFailed { throw AuthError(.providerUnavailable, "token key id unknown and the JWKS endpoint cannot be reached") }
                return current  // an unknown kid is refused by the caller
            }
            if current == nil, lastFailed { throw AuthError(.providerUnavailable, "the JWKS endpoint could not be read lately") }
        }
        do {
            return try await refresh(for: kid)
        } catch {
            guard let current, withinStaleness else { throw error }
            if !known { throw AuthError(.providerUnavailable, "token key id unknown and the JWKS endpoint cannot be reached") }
            return current
        }
    }

    /// One refresh shared by every caller waiting for it.
    private func refresh(for kid: String?) async throws(AuthError) -> JWTAuthenticator.Keys {
        let task = state.withLock { state -> Task<Renewal, any Error> in
            if let running = state.inFlight { return running }
            state.lastAttempt = .now
            let since = state.fetchedAtWall
            // Awaited by every caller below; it ends within the fetch's own timeout (twice
            // that when it waits for another replica's fetch first).
            let running = Task { try await self.renew(for: kid, newerThan: since) }
            state.inFlight = running
            return running
        }
        let result = await task.result
        let keys = state.withLock { state -> JWTAuthenticator.Keys? in
            if state.inFlight == task { state.inFlight = nil }
            switch result {
            case .success(.renewed(let keys, let fetchedAt)):
                state.keys = keys
                state.fetchedAtWall = fetchedAt
                // The local age of the set: as old as the document, not as old as our copy.
                state.fetchedAt = .now - max(.zero, wallClock.now - fetchedAt)
                state.lastAttemptFailed = false
                return keys
            case .success(.unchanged):
                return state.keys
            case .failure:
                state.lastAttemptFailed = true
                return nil
            }
        }
        switch result {
        case .success:
            guard let keys else { throw AuthError(.providerUnavailable, "another replica is fetching the JWKS document") }
            return keys
        case .failure(let error as AuthError): throw error
        case .failure(let error): throw AuthError(.providerUnavailable, "the JWKS endpoint could not be read: \(error)")
        }
    }

    /// The cluster's document when it is newer than ours and serves (`kid` known; for a
    /// scheduled refresh, younger than the refresh interval); else a fetch — by this replica
    /// only if it wins the right to fetch, or else the document of the replica that won (read
    /// at once when it is already published, waited for up to the fetch timeout when not).
    /// A shared store that fails is passed by: the fetch is then this replica's own, within its
    /// local budget.
    private func renew(for kid: String?, newerThan since: ClockInstant?) async throws -> Renewal {
        guard let shared else { return try await fetch().renewal }
        let url = configuration.url
        var candidate: Renewal?
        do {
            let published = try await shared.latest(url: url)
            if let published, since.map({ published.fetchedAt > $0 }) ?? true,
                let keys = try? await Self.load(published.bytes, maximumBytes: configuration.maximumBytes)
            {
                let age = wallClock.now - published.fetchedAt
                if let kid, keys.ids.contains(kid) { return .renewed(keys, fetchedAt: published.fetchedAt) }
                if kid == nil, age < configuration.refreshInterval { return .renewed(keys, fetchedAt: published.fetchedAt) }
                // Fetched within the refetch interval: what the holder of the right to fetch found.
                if age < configuration.minimumRefetchInterval { candidate = .renewed(keys, fetchedAt: published.fetchedAt) }
            }
            guard try await shared.claimFetch(url: url, for: max(configuration.minimumRefetchInterval, .milliseconds(1))) else {
                if let candidate { return candidate }
                return try await awaitPublication(after: published?.fetchedAt ?? since, from: shared)
            }
        } catch let error as AuthError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            return try await fetch().renewal  // the store is down: this replica's own fetch
        }
        let fetched = try await fetch()
        // Shared on a best-effort basis: the others fetch for themselves if it does not arrive.
        try? await shared.publish(fetched.document, url: url, keepFor: configuration.maximumStaleness)
        return fetched.renewal
    }

    /// Polls the shared store for the document of the replica that holds the right to fetch.
    private func awaitPublication(after seen: ClockInstant?, from shared: any JWKSDocumentStore) async throws -> Renewal {
        let deadline = ContinuousClock.now + configuration.timeout
        while ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            if let published = try await shared.latest(url: configuration.url), seen.map({ published.fetchedAt > $0 }) ?? true {
                let keys = try await Self.load(published.bytes, maximumBytes: configuration.maximumBytes)
                return .renewed(keys, fetchedAt: published.fetchedAt)
            }
        }
        return .unchanged
    }

    /// A fetch from the endpoint: the keys, and the document to share.
    private func fetch() async throws -> (renewal: Renewal, document: JWKSDocument) {
        let bytes = try await fetchDocument(configuration)
        let keys = try await Self.load(bytes, maximumBytes: configuration.maximumBytes)
        let document = JWKSDocument(bytes: bytes, fetchedAt: wallClock.now)
        return (.renewed(keys, fetchedAt: document.fetchedAt), document)
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
