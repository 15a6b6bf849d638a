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
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>? = nil
            let rc = getaddrinfo(host, String(port), &hints, &list)
            guard rc == 0, let list else {
                let text = gai_strerror(rc).map { String(cString: $0) } ?? "error \(rc)"
                throw RedisClientError(.addressResolution, "cannot resolve '\(host)': \(text)")
            }
            defer { freeaddrinfo(list) }
            var lastError = RedisClientError(.connectionRefused, "no address for \(host)")
            var cursor: UnsafeMutablePointer<addrinfo>? = list
            while let info = cursor {
                cursor = info.pointee.ai_next
                let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
                guard fd >= 0 else { continue }
                do {
                    guard let addr = info.pointee.ai_addr else { close(fd); continue }
                    try finishConnect(fd, addr, info.pointee.ai_addrlen, deadline: deadline, what: "\(endpoint)")
                    var one: Int32 = 1
                    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
                    return fd
                } catch {
                    close(fd)
                    lastError = error
                    if error.code == .connectTimeout { throw error }
                }
            }
            throw lastError
        }
    }

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
