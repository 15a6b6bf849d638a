/// Waits until `condition` holds, for at most `timeout` of real time: it first yields a few
/// hundred times (enough for work already scheduled on other tasks, with no clock involved),
/// then checks every millisecond. Returns whether the condition held.
///
/// One meaning everywhere: "this happens soon, within `timeout`". Assert a latency bound with
/// a measured duration instead.
///
/// ```swift
/// #expect(await eventually { store.isDegraded })
/// ```
public func eventually(within timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async rethrows -> Bool {
    for _ in 0..<500 {
        if try await condition() { return true }
        await Task.yield()
    }
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(1))
    }
    return try await condition()
}
