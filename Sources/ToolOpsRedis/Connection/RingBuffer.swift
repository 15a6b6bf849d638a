/// A minimal FIFO queue with amortised O(1) append and removeFirst.
struct RingBuffer<Element> {
    private var storage: [Element?] = Array(repeating: nil, count: 16)
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    var first: Element? { count == 0 ? nil : storage[head] }

    mutating func append(_ element: Element) {
        if count == storage.count { grow() }
        storage[(head + count) & (storage.count - 1)] = element
        count += 1
    }

    @discardableResult
    mutating func removeFirst() -> Element? {
        guard count > 0 else { return nil }
        let element = storage[head]
        storage[head] = nil
        head = (head + 1) & (storage.count - 1)
        count -= 1
        return element
    }

    /// Mutates the first element in place (no copy of what it holds); `nil` when empty.
    mutating func modifyFirst<R>(_ body: (inout Element) -> R) -> R? {
        guard count > 0, storage[head] != nil else { return nil }
        return body(&storage[head]!)
    }

    private mutating func grow() {
        var bigger: [Element?] = Array(repeating: nil, count: storage.count * 2)
        for index in 0..<count { bigger[index] = storage[(head + index) & (storage.count - 1)] }
        storage = bigger
        head = 0
    }
}
