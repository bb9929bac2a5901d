import Glibc

/// Writes `text` to standard output in full.
func printOut(_ text: String) { writeAll(text, to: 1) }

/// Writes `text` to standard error in full.
func printError(_ text: String) { writeAll(text, to: 2) }

/// Writes all of `text` with write(2), retrying short writes and EINTR (no
/// stdio state shared between threads; gives up on any other error).
private func writeAll(_ text: String, to fd: Int32) {
    var text = text
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n <= 0 { if errno == EINTR { continue }; return }
            offset += n
        }
    }
}
