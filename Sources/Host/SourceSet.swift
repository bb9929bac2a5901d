/// The executor's view of the registered `ExecutorSource`s: every one by
/// its descriptor, and the active ones it looks at on every turn. A source
/// is active from its registration until the executor sleeps (it is then
/// armed and left alone), and again once its descriptor fired; so a turn
/// costs what the sources that rang since the last sleep cost, however many
/// idle ones there are. A source without a descriptor cannot ring and stays
/// active. Executor thread only.
struct SourceSet {
    private var all: [ObjectIdentifier: any ExecutorSource] = [:]
    private var byDescriptor: [Int32: ObjectIdentifier] = [:]
    private var active: [any ExecutorSource] = []
    private var isActive: Set<ObjectIdentifier> = []

    var isEmpty: Bool { all.isEmpty }

    /// Takes the registered sources as they are now: the new ones become
    /// active and watched, the removed ones are unwatched and let go.
    mutating func update(to registered: [any ExecutorSource], watch: (Int32) -> Void, unwatch: (Int32) -> Void) {
        let now = Set(registered.map(ObjectIdentifier.init))
        for (id, source) in all where !now.contains(id) {
            if source.wakeDescriptor >= 0 {
                unwatch(source.wakeDescriptor)
                byDescriptor[source.wakeDescriptor] = nil
            }
            all[id] = nil
            if isActive.remove(id) != nil { active.removeAll { ObjectIdentifier($0) == id } }
        }
        for source in registered where all[ObjectIdentifier(source)] == nil {
            let id = ObjectIdentifier(source)
            all[id] = source
            if source.wakeDescriptor >= 0 {
                byDescriptor[source.wakeDescriptor] = id
                watch(source.wakeDescriptor)
            }
            isActive.insert(id)
            active.append(source)
        }
    }

    /// The source watching `descriptor` rang: look at it from the next turn on.
    mutating func activate(descriptor: Int32) {
        guard let id = byDescriptor[descriptor], let source = all[id], isActive.insert(id).inserted else { return }
        active.append(source)
    }

    /// Looks at `source` from the next turn on, whether or not it rang;
    /// false when it is not registered (nothing to look at).
    mutating func activate(_ source: any ExecutorSource) -> Bool {
        let id = ObjectIdentifier(source)
        guard all[id] != nil else { return false }
        if isActive.insert(id).inserted { active.append(source) }
        return true
    }

    /// Lets every active source take what is ready; true if any had something.
    func poll() -> Bool {
        var any = false
        for source in active where source.poll() { any = true }
        return any
    }

    /// Before the executor sleeps: arms every active source; those with
    /// work after all (and those that cannot ring) stay active. True if
    /// any has work (then the executor does not sleep).
    mutating func prepareToSleep() -> Bool {
        var any = false
        var kept = 0
        for index in active.indices {
            let source = active[index]
            let ready = source.prepareToSleep()
            any = any || ready
            if ready || source.wakeDescriptor < 0 {
                active.swapAt(kept, index)
                kept += 1
            } else {
                isActive.remove(ObjectIdentifier(source))
            }
        }
        active.removeLast(active.count - kept)
        return any
    }
}
