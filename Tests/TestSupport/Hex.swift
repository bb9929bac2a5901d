/// Bytes from hex text; whitespace is ignored. Traps on bad input (test data only).
public func hex(_ text: String) -> [UInt8] {
    let digits = text.filter { !$0.isWhitespace }
    precondition(digits.count % 2 == 0, "odd number of hex digits")
    var bytes: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        bytes.append(UInt8(digits[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

/// Hex text of bytes, for readable failure messages.
public func hexString(_ bytes: [UInt8]) -> String {
    bytes.map { let s = String($0, radix: 16); return s.count == 1 ? "0" + s : s }.joined()
}
