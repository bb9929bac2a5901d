/// A FIFO with a fixed capacity, backed by a ring buffer. Pushing onto a full
/// queue fails instead of growing.
public struct BoundedQueue<Element> {
    private var storage: [Element?]
    private var head = 0
    public private(set) var count = 0

    public init(capacity: Int) {
        precondition(capacity > 0)
        storage = Array(repeating: nil, count: capacity)
    }

    public var capacity: Int { storage.count }
    public var isEmpty: Bool { count == 0 }
    public var isFull: Bool { count == storage.count }
    public var first: Element? { isEmpty ? nil : storage[head] }

    /// Appends `element`; false (and nothing stored) when full.
    @discardableResult
    public mutating func push(_ element: Element) -> Bool {
        guard !isFull else { return false }
        storage[(head + count) % storage.count] = element
        count += 1
        return true
    }

    public mutating func pop() -> Element? {
        guard count > 0 else { return nil }
        let element = storage[head]
        storage[head] = nil
        head = (head + 1) % storage.count
        count -= 1
        return element
    }

    public mutating func removeAll() {
        while pop() != nil {}
    }
}
