#!/usr/bin/env python3
"""tshark reads every capture under ROOT once: no malformed packet, no expert error, and no
expert warning a real stack would not cause (issue 14).

usage: tshark_scan.py ROOT [JOBS]

Prints one line per capture, "ok TEXT" or "FAIL TEXT", in the order of the sorted paths. One
tshark pass per capture gives every figure (frames, DNS frames, malformed frames, expert
items with their severities), and JOBS (default 2) captures are read at a time: the same
verdicts the four filtered passes a capture used to take, in a quarter of the reads.
"""
import os, re, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

# 8443 and 443 decode as TLS (decrypted with the keys embedded in the capture), 6970 as HTTP.
DECODE = ["-d", "tcp.port==8443,tls", "-d", "tcp.port==6970,http"]
# Expert severities as tshark prints them (epan/proto.h: PI_WARN, PI_ERROR).
WARN, ERROR = 0x00600000, 0x00800000
SEP = "\x1f"  # between the occurrences of one field: expert messages may hold commas
# A reset is what a refused or crashed peer sends; DNS retransmissions are expected only where
# a scenario loses or kills the server.
ALLOWED = r"^Connection reset \(RST\)$"
RETRANSMITS = ("dns/dns-crash-restart/", "dns/dns-server-unreachable/", "dns/dns-loss-retransmit/")


def scan(root, path):
    name = os.path.relpath(path, root)
    allowed = ALLOWED + (r"|^DNS (query|response) retransmission" if name.startswith(RETRANSMITS) else "")
    cmd = ["tshark", "-r", path, *DECODE, "-T", "fields", "-E", "occurrence=a",
           "-E", f"aggregator={SEP}", "-e", "frame.protocols",
           "-e", "_ws.expert.severity", "-e", "_ws.expert.message"]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300)
    except subprocess.TimeoutExpired:
        return False, f"tshark {name}: no answer in 300 s"
    rows = run.stdout.splitlines()
    if run.returncode != 0 or not rows:
        return False, f"tshark {name}: exit {run.returncode}, {len(rows)} frames: {run.stderr.strip()[:200]}"
    frames = dns = bad = 0
    warnings = {}
    for row in rows:
        protocols, severities, messages = (row.split("\t") + ["", ""])[:3]
        frames += 1
        layers = protocols.split(":")
        dns += "dns" in layers
        sev = [int(s) for s in severities.split(SEP) if s]
        msg = messages.split(SEP) if messages else []
        bad += "_ws.malformed" in layers or any(s >= ERROR for s in sev)
        for s, m in zip(sev, msg):
            if s >= WARN and not re.search(allowed, m):
                warnings[m] = warnings.get(m, 0) + 1
    if bad == 0 and not warnings:
        return True, f"tshark {name} ({frames} frames, {dns} DNS, none malformed, no unexpected warning)"
    top = " ".join(f"{n} {m}" for m, n in sorted(warnings.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
    return False, f"tshark {name}: {bad} malformed/errors of {frames}; warnings: {top}"


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    root = sys.argv[1]
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f == "capture.pcapng")
    if not paths:
        print(f"FAIL no capture.pcapng under {root}", flush=True)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for good, text in pool.map(lambda p: scan(root, p), paths):
            print(("ok " if good else "FAIL ") + text, flush=True)


if __name__ == "__main__":
    main()
