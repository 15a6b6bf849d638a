import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// POSIX socket helpers used on the connection's own I/O thread (never on Swift's
/// cooperative pool), so blocking calls such as `getaddrinfo` are acceptable here.
enum PosixSocket {
    static func errnoString(_ code: Int32 = errno) -> String {
        guard let text = strerror(code) else { return "errno \(code)" }
        return String(cString: text)
    }

    /// Milliseconds until `deadline`, clamped to 0...Int32.max.
    static func milliseconds(until deadline: ContinuousClock.Instant) -> Int32 {
        let remaining = ContinuousClock.now.duration(to: deadline)
        if remaining <= .zero { return 0 }
        let (seconds, attoseconds) = remaining.components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1
        return Int32(clamping: ms)
    }

    /// Waits until `fd` has one of `events` or the deadline passes. Returns the revents (0 on timeout).
    static func wait(_ fd: Int32, events: Int16, deadline: ContinuousClock.Instant) throws(RedisClientError) -> Int16 {
        while true {
            var pfd = pollfd(fd: fd, events: events, revents: 0)
            let rc = poll(&pfd, 1, milliseconds(until: deadline))
            if rc < 0 {
                if errno == EINTR { continue }
                throw RedisClientError(.connectionClosed, "poll: \(errnoString())")
            }
            return rc == 0 ? 0 : pfd.revents
        }
    }

    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    /// Connects to `endpoint` before `deadline`; returns a non-blocking socket.
    static func connect(to endpoint: RedisConfiguration.Endpoint, deadline: ContinuousClock.Instant) throws(RedisClientError) -> Int32 {
        switch endpoint {
        case .unix(let path):
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let pathBytes = Array(path.utf8)
            let capacity = MemoryLayout.size(ofValue: address.sun_path)
            guard pathBytes.count < capacity else {
                throw RedisClientError(.invalidConfiguration, "unix socket path too long: \(path)")
            }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: pathBytes)
                raw[pathBytes.count] = 0
            }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw RedisClientError(.connectionRefused, "socket: \(errnoString())") }
            do {
                try withUnsafePointer(to: &address) { (pointer) throws(RedisClientError) in
                    try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(RedisClientError) in
                        try finishConnect(fd, sa, socklen_t(MemoryLayout<sockaddr_un>.size), deadline: deadline, what: path)
                    }
                }
            } catch {
                close(fd)
                throw error
            }
            return fd

        case .tcp(let host, let port):
            let addresses = try resolve(host: host, port: port, deadline: deadline)
            let fd = try connectAny(addresses, deadline: deadline) { (address, until) throws(RedisClientError) -> Int32 in
                let fd = socket(address.family, address.socketType, address.protocolNumber)
                guard fd >= 0 else { throw RedisClientError(.connectionRefused, "socket: \(errnoString())") }
                // The bytes are a sockaddr copied from getaddrinfo's answer (never empty).
                let outcome = address.bytes.withUnsafeBytes { raw -> RedisClientError? in
                    guard let base = raw.baseAddress else { return RedisClientError(.addressResolution, "empty address") }
                    do throws(RedisClientError) {
                        try finishConnect(fd, base.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count), deadline: until, what: "\(endpoint)")
                        return nil
                    } catch {
                        return error
                    }
                }
                if let outcome {
                    close(fd)
                    throw outcome
                }
                return fd
            }
            configureTCP(fd)
            return fd
        }
    }

    /// One resolved address, copied out of `getaddrinfo`'s list.
    struct Address: Sendable {
        var family: Int32
        var socketType: Int32
        var protocolNumber: Int32
        var bytes: [UInt8]
    }

    /// Tries each address in turn, each with its share of the time left (the last gets all of
    /// it), so an unreachable first address (an IPv6 record without an IPv6 route) cannot use
    /// up the whole connect timeout. Returns the first connection; otherwise throws the last
    /// error — a timeout only if every address timed out.
    static func connectAny<Connection>(
        _ addresses: [Address], deadline: ContinuousClock.Instant,
        now: () -> ContinuousClock.Instant = { .now },
        attempt: (Address, ContinuousClock.Instant) throws(RedisClientError) -> Connection
    ) throws(RedisClientError) -> Connection {
        var lastError = RedisClientError(.connectionRefused, "no address to connect to")
        var timedOut = 0
        for (index, address) in addresses.enumerated() {
            let remaining = now().duration(to: deadline)
            if remaining <= .zero { break }
            let share = remaining / (addresses.count - index)
            do {
                return try attempt(address, now().advanced(by: share))
            } catch {
                if error.code == .connectTimeout { timedOut += 1 }
                lastError = error
            }
        }
        if timedOut == addresses.count && !addresses.isEmpty {
            throw RedisClientError(.connectTimeout, "connect timed out on each of \(addresses.count) address(es): \(lastError.message)")
        }
        throw lastError
    }

    /// Resolves `host` before `deadline`. `getaddrinfo` cannot be given a timeout, so it runs on
    /// a thread of its own; at the deadline the connection stops waiting (the lookup finishes
    /// and frees itself later).
    static func resolve(
        host: String, port: Int, deadline: ContinuousClock.Instant,
        lookup: @escaping @Sendable (String, Int) -> Result<[Address], RedisClientError> = lookup
    ) throws(RedisClientError) -> [Address] {
        let answer = try Answer()
        guard IOThread.start({ answer.set(lookup(host, port)) }) else {
            throw RedisClientError(.connectionRefused, "cannot start a resolver thread (out of resources)")
        }
        guard let result = answer.wait(until: deadline) else {
            throw RedisClientError(.connectTimeout, "resolving '\(host)' took longer than the connect timeout")
        }
        return try result.get()
    }

    /// The blocking lookup, copying each address out of the C list.
    @Sendable static func lookup(host: String, port: Int) -> Result<[Address], RedisClientError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let list else {
            let text = gai_strerror(rc).map { String(cString: $0) } ?? "error \(rc)"
            return .failure(RedisClientError(.addressResolution, "cannot resolve '\(host)': \(text)"))
        }
        defer { freeaddrinfo(list) }
        var addresses: [Address] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = list
        while let info = cursor {
            cursor = info.pointee.ai_next
            guard let addr = info.pointee.ai_addr, info.pointee.ai_addrlen > 0 else { continue }
            let bytes = [UInt8](UnsafeRawBufferPointer(start: addr, count: Int(info.pointee.ai_addrlen)))
            addresses.append(Address(
                family: info.pointee.ai_family, socketType: info.pointee.ai_socktype, protocolNumber: info.pointee.ai_protocol,
                bytes: bytes))
        }
        if addresses.isEmpty { return .failure(RedisClientError(.addressResolution, "no address for '\(host)'")) }
        return .success(addresses)
    }

    /// A lookup's result, handed from the resolver thread to the connection's thread through
    /// a pipe (pollable with a timeout).
    private final class Answer: Sendable {
        private let state = Mutex<Result<[Address], RedisClientError>?>(nil)
        private let readFD: Int32
        private let writeFD: Int32

        init() throws(RedisClientError) {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw RedisClientError(.connectionRefused, "cannot create a pipe: \(errnoString())") }
            readFD = fds[0]
            writeFD = fds[1]
        }

        deinit {
            close(readFD)
            close(writeFD)
        }

        func set(_ result: Result<[Address], RedisClientError>) {
            state.withLock { $0 = result }
            var byte: UInt8 = 1
            _ = write(writeFD, &byte, 1)
        }

        func wait(until deadline: ContinuousClock.Instant) -> Result<[Address], RedisClientError>? {
            _ = try? PosixSocket.wait(readFD, events: Int16(POLLIN), deadline: deadline)
            return state.withLock { $0 }
        }
    }

    /// Options every TCP connection gets: no Nagle delay, and keepalive probes after 60 s idle
    /// (every 10 s, 3 tries) instead of the kernel's 2 hours, so a peer that vanished (or a NAT
    /// or load balancer that dropped the flow) is noticed even on an idle connection; unacknowledged
    /// writes give up after 30 s (`TCP_USER_TIMEOUT`).
    static func configureTCP(_ fd: Int32) {
        func set(_ level: Int32, _ option: Int32, _ value: Int32) {
            var value = value
            setsockopt(fd, level, option, &value, socklen_t(MemoryLayout<Int32>.size))
        }
        set(Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        set(SOL_SOCKET, SO_KEEPALIVE, 1)
        set(Int32(IPPROTO_TCP), TCP_KEEPIDLE, keepaliveIdleSeconds)
        set(Int32(IPPROTO_TCP), TCP_KEEPINTVL, 10)
        set(Int32(IPPROTO_TCP), TCP_KEEPCNT, 3)
        set(Int32(IPPROTO_TCP), Int32(TCP_USER_TIMEOUT), 30_000)
    }

    static let keepaliveIdleSeconds: Int32 = 60

    private static func finishConnect(
        _ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t,
        deadline: ContinuousClock.Instant, what: String
    ) throws(RedisClientError) {
        setNonBlocking(fd)
        var rc: Int32
        repeat { rc = Glibc.connect(fd, address, length) } while rc < 0 && errno == EINTR
        if rc == 0 { return }
        guard errno == EINPROGRESS || errno == EAGAIN else {
            throw RedisClientError(.connectionRefused, "connect to \(what): \(errnoString())")
        }
        let revents = try wait(fd, events: Int16(POLLOUT), deadline: deadline)
        if revents == 0 { throw RedisClientError(.connectTimeout, "connect to \(what) timed out") }
        var soError: Int32 = 0
        var soLength = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &soLength)
        if soError != 0 {
            throw RedisClientError(.connectionRefused, "connect to \(what): \(errnoString(soError))")
        }
    }
}
