"""The live benches' measuring (issue 19: on a loaded two-core machine the rate swings with
the neighbours; the cost of a request in the server's own CPU time much less).

  python3 scripts/lib/cpu.py PID...
      CPU time (user + system, seconds) of the processes and all their descendants, from /proc.
  python3 scripts/lib/cpu.py rounds FILE TAG
      Of FILE's lines `TAG RATE ANSWERED CPU_BEFORE CPU_AFTER [...]` (one a round): the median
      rate and the server's CPU microseconds per answered request over all rounds.
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


def rounds(path, tag):
    import statistics
    rs = [l.split() for l in open(path) if l.split()[:1] == [tag]]
    rate = statistics.median(float(r[1]) for r in rs)
    us = 1e6 * sum(float(r[4]) - float(r[3]) for r in rs) / max(sum(int(r[2]) for r in rs), 1)
    return rate, us


if __name__ == "__main__":
    if sys.argv[1:2] == ["rounds"]:
        print("%.0f %.1f" % rounds(sys.argv[2], sys.argv[3]))
    else:
        print(f"{cpu([int(a) for a in sys.argv[1:]]):.3f}")
