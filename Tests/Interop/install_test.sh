#!/usr/bin/env bash
# Installing as a user would: `make install PREFIX=...` puts the tool, the
# preload library, the man page and completions in place; the installed tool
# runs programs on a stack through its installed preload library; `make
# uninstall` takes it all away again.
source "$(dirname "$0")/lib.sh"

PREFIX=$WORK/prefix
make -C "$ROOT" install PREFIX="$PREFIX" >"$WORK/install.out" 2>&1
INSTALLED=$?

installed_files() {
    cat "$WORK/install.out" | tail -n 5
    [ "$INSTALLED" = 0 ] && for f in bin/tapstack lib/libtapstack-preload.so share/man/man1/tapstack.1 \
        share/bash-completion/completions/tapstack share/zsh/site-functions/_tapstack \
        share/fish/vendor_completions.d/tapstack.fish share/doc/tapstack/tapstack@.service; do
        [ -s "$PREFIX/$f" ] || { echo "missing $f"; return 1; }
    done
}
check "make install PREFIX=... installs the tool, preload library, man page, completions and unit" installed_files

man_page_reads() {
    local out
    out=$(MANWIDTH=100 man -l "$PREFIX/share/man/man1/tapstack.1" 2>/dev/null) || return 1
    printf '%s\n' "$out" | head -n 12
    grep -q "tapstack .*A userspace UDP/IPv4 network stack" <<<"$out" &&
        grep -qE "^ +ss +List the UDP sockets of a running stack" <<<"$out" &&
        grep -q -- "--pcap-format" <<<"$out"
}
check "man -l shows the page with every subcommand and option" man_page_reads

version_matches() {
    local version
    version=$("$PREFIX/bin/tapstack" --version) || return 1
    echo "$version"
    [ "$version" = "$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' "$ROOT/Sources/SocketAPI/Version.swift")" ]
}
check "tapstack --version prints the version in Sources/SocketAPI/Version.swift" version_matches

bash_completion_completes() {
    local words
    words=$(bash -c "source '$PREFIX/share/bash-completion/completions/tapstack'
        COMP_WORDS=(tapstack s); COMP_CWORD=1; COMP_LINE='tapstack s'; COMP_POINT=10
        _tapstack; printf '%s\n' \"\${COMPREPLY[@]}\"" 2>&1)
    echo "$words"
    grep -qx ss <<<"$words" && grep -qx stats <<<"$words" && grep -qx send <<<"$words"
}
check "the bash completion offers the subcommands" bash_completion_completes

installed_exec_uses_installed_preload() {
    local out
    out=$(in_ns "$PREFIX/bin/tapstack" exec --socket "$WORK/s.sock" -- python3 -c '
import os, socket
print(os.environ["LD_PRELOAD"])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("192.0.2.1", 9)); print(s.getsockname()[0])') || { echo "$out"; return 1; }
    echo "$out"
    [ "$(head -n 1 <<<"$out")" = "$PREFIX/bin/../lib/libtapstack-preload.so" ] && [ "$(tail -n 1 <<<"$out")" = 192.0.2.2 ]
}
BIN="$PREFIX/bin/tapstack" start_stack --socket "$WORK/s.sock" || { echo "FAIL $TEST_NAME: installed stack did not start"; finish; exit 1; }
wait_for test -S "$WORK/s.sock"
check "the installed tapstack exec finds its preload library in PREFIX/lib" installed_exec_uses_installed_preload
stop_stack TERM

uninstalled() {
    make -C "$ROOT" uninstall PREFIX="$PREFIX" >/dev/null 2>&1 || return 1
    local left
    left=$(find "$PREFIX" -type f)
    echo "left: $left"
    [ -z "$left" ]
}
check "make uninstall removes every installed file" uninstalled

finish
