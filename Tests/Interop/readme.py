#!/usr/bin/env python3
"""Runs the README's console blocks against a running stack, as a reader would.

Each ```console block is a shell session: `$ COMMAND` lines are run in order
in one bash inside the stack's namespace, and the lines shown after a
command must be what it printed on standard output, line for line (`…`
stands for any text). A command ending in `&` is started in the background;
the next command waits (at most 10 s) until it has bound a new UDP socket
(the kernel's, or the stack's as `tapstack ss` lists them),
as a reader at a keyboard would. A command that only looks (cat, ip neigh,
tapstack ss/stats, tshark) is run again until its output matches, at most
5 s: what it shows may still be on its way. Usage: readme.py README NAMESPACE WORKDIR
[SUBSTITUTIONS...] where each substitution is FROM=TO applied to commands.
"""
import re
import subprocess
import sys
import time

readme, namespace, workdir = sys.argv[1:4]
substitutions = [s.split("=", 1) for s in sys.argv[4:]]


def blocks(text):
    """The console blocks: lists of (command, expected lines)."""
    found = []
    for body in re.findall(r"```console\n(.*?)```", text, re.S):
        steps = []
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        found.append(steps)
    return found


def pattern(line):
    return re.compile("^" + ".*".join(re.escape(part) for part in line.split("…")) + "$")


def udp_sockets():
    """UDP sockets bound in the namespace: the kernel's and the stack's."""
    kernel = subprocess.run(["ip", "netns", "exec", namespace, "ss", "-Huan"], capture_output=True, text=True).stdout
    stack = subprocess.run(["tapstack", "ss"], capture_output=True, text=True).stdout
    return len(kernel.splitlines()) + len(stack.splitlines())


failures = 0
for number, steps in enumerate(blocks(open(readme).read()), 1):
    background = []
    for command, expected in steps:
        for old, new in substitutions:
            command = command.replace(old, new)
        if command.endswith("&"):
            before = udp_sockets()
            background.append(subprocess.Popen(["ip", "netns", "exec", namespace, "bash", "-c", command[:-1]],
                                               cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 10
            while udp_sockets() <= before and time.monotonic() < deadline:
                time.sleep(0.02)
            print(f"block {number}: $ {command}   (in the background)")
            continue
        looks = command.split("|")[0].split()[0] in ("cat", "ip", "tshark") or command.startswith(("tapstack ss", "tapstack stats"))
        deadline = time.monotonic() + (5 if looks else 0)
        while True:
            result = subprocess.run(["ip", "netns", "exec", namespace, "bash", "-c", command], cwd=workdir,
                                    capture_output=True, text=True, timeout=30)
            got = result.stdout.splitlines()
            ok = result.returncode == 0 and len(got) == len(expected) and all(
                pattern(want).match(line) for want, line in zip(expected, got))
            if ok or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        print(f"{'ok' if ok else 'MISMATCH'} block {number}: $ {command}")
        if not ok:
            failures += 1
            print(f"  status {result.returncode}; expected:")
            print("\n".join("    " + line for line in expected))
            print("  got:")
            print("\n".join("    " + line for line in got))
            print("  stderr: " + result.stderr.strip()[-400:])
    for process in background:
        process.terminate()
        process.wait()
print(f"{failures} mismatches")
sys.exit(1 if failures else 0)
