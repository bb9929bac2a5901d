/// tapstack's release, in one place: `tapstack --version` prints it, the
/// consumer-package test tags a clone with it, and a package depending on
/// tapstack names it in `.package(url:from:)`.
public enum TapstackVersion {
    /// The semantic version of this source tree.
    public static let current = "0.1.0"
}
