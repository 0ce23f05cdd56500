"""CPU time (user + system, in seconds) of processes and all their descendants, from /proc.

Usage: python3 scripts/lib/cpu.py PID... — prints one number. The live benches read it before
and after each round, so a server's figure is CPU spent per request, not just requests per
second (issue 19: on a loaded two-core machine the rate swings with the neighbours; the cost
per request does not).
"""
import os
import sys


def tree(roots):
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                parent[int(d)] = int(s[s.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                pass
    out, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def cpu(pids):
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pids):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            fields = s[s.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / hz


if __name__ == "__main__":
    print(f"{cpu([int(a) for a in sys.argv[1:]]):.3f}")
