#!/usr/bin/env bash
# Builds Tests/Consumer against this tree as a versioned dependency, the way
# another package would depend on tapstack: the tree is committed to a
# scratch repository tagged with the version in Sources/SocketAPI/Version.swift,
# and the consumer names it with `.package(url:from:)`. Then runs it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
version=$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' "$root/Sources/SocketAPI/Version.swift")
[ -n "$version" ] || { echo "consumer: FAIL no version in Sources/SocketAPI/Version.swift"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The files of this tree (committed or not, ignored ones left out).
mkdir "$work/tapstack"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"; done | xargs -0 cp --parents -t "$work/tapstack")
git -C "$work/tapstack" init -q
git -C "$work/tapstack" add -A
git -C "$work/tapstack" -c user.name=consumer-test -c user.email=consumer@test commit -qm "tapstack $version"
git -C "$work/tapstack" tag "$version"
cp -r "$here/Package.swift" "$here/Sources" "$work/"
mkdir -p "$work/consumer" && mv "$work/Package.swift" "$work/Sources" "$work/consumer/"
cd "$work/consumer"
echo "consumer: building against tapstack $version from a tagged clone (.package(url:from: \"0.1.0\"))"
TAPSTACK_URL="file://$work/tapstack" swift build -c release 2>&1 | tail -n 3
TAPSTACK_URL="file://$work/tapstack" swift run -c release --skip-build Consumer
