#!/usr/bin/env bash
# What a user sees when something is wrong: one clear line and a non-zero exit.
source "$(dirname "$0")/lib.sh"

one_line_error() {  # EXPECTED_SUBSTRING CMD...
    local expected=$1
    shift
    local out status
    out=$("$@" 2>&1 >/dev/null)
    status=$?
    echo "status $status: $out"
    [ "$status" -ne 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && grep -q -- "$expected" <<<"$out"
}

help_documents_every_option() {
    local out
    out=$("$BIN" run --help) || return 1
    for option in --interface --address --mac --gateway --echo-port --pcap --log-level; do
        grep -q -- "$option" <<<"$out" || { echo "missing $option"; return 1; }
    done
}

check "--help documents every option" help_documents_every_option
check "--address banana fails with one line" one_line_error "banana" "$BIN" run --address banana
check "--mac with a bad value fails with one line" one_line_error "not a MAC address" "$BIN" run --mac 02:00
check "--gateway off the subnet fails with one line" one_line_error "not on the subnet" "$BIN" run --gateway 10.0.0.1
check "--log-level nonsense fails with one line" one_line_error "not a log level" "$BIN" run --log-level loud
check "an unknown option fails with one line" one_line_error "Unknown option" "$BIN" run --frobnicate
check "--busy-poll with a word other than auto fails with one line" one_line_error "or 'auto'" "$BIN" run --busy-poll fast
check "--busy-poll beyond a second fails with one line" one_line_error "0 to 1000000" "$BIN" run --busy-poll 2000000
check "exec --busy-poll beyond a second fails with one line" one_line_error "0 to 1000000" "$BIN" exec --busy-poll 2000000 -- true
check "exec --busy-poll with a negative number fails with one line" one_line_error "not -5" "$BIN" exec --busy-poll=-5 -- true
check "exec --busy-poll with a word other than auto fails with one line" one_line_error "or 'auto', not fast" "$BIN" exec --busy-poll fast -- true
check "an unwritable pcap path fails with one line" \
    one_line_error "cannot open pcap file" in_ns "$BIN" run --pcap /nonexistent/x.pcap
check "no permission to create a device fails with one line" \
    one_line_error "no permission" in_ns setpriv --reuid=nobody --regid=nogroup --clear-groups "$BIN" run --interface tapx
check "a missing /dev/net/tun fails with one line" \
    one_line_error "/dev/net/tun" in_ns unshare --mount sh -c "mount -t tmpfs none /dev/net && exec $BIN run"
finish
