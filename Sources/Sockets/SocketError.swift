import Stack

/// Errors of socket calls, named after their POSIX meaning (`StackError`).
public typealias SocketError = StackError
