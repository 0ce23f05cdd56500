#!/usr/bin/env bash
# Issue 19's live DNS bench: the same load generator (Debian's dnsperf, one client thread,
# 100 queries in flight) against `uclab serve`'s internal DNS (dns-int of the built-in
# topology) and against a real unbound (Debian's, on loopback, one thread) serving the very
# answers the mock gives (read from it with dig), side by side in one run.
# Usage: scripts/bench-dns-live.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
for t in dnsperf unbound dig; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done
cargo build --release --quiet -p uclab
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
target/release/uclab serve --ports-json "$work/ports.json" >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -s "$work/ports.json" ] && break; sleep 0.1; done
read -r DI DIP < <(python3 -c "import json,sys;a=[e['addr'] for e in json.load(open(sys.argv[1])) if e['node']=='dns-int' and e['service']=='dns'][0];print(*a.rsplit(':',1))" "$work/ports.json")
# What a Jabber client asks the internal DNS (SPEC SD5, AU1), one name that does not exist.
cat >"$work/queries" <<Q
_cisco-uds._tcp.example.com SRV
_cuplogin._tcp.example.com SRV
cucm1.example.com A
cucm2.example.com A
imp1.example.com A
imp2.example.com A
expc.example.com A
nothere.example.com A
Q
# unbound serves exactly what the mock answers.
UP=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  cat <<CONF
server:
  interface: 127.0.0.1
  port: $UP
  num-threads: 1
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: ""
  use-syslog: no
  logfile: "$work/unbound.log"
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "example.com." static
CONF
  while read -r name type; do
    dig @"$DI" -p "$DIP" "$name" "$type" +noall +answer | while read -r line; do
      [ -n "$line" ] && echo "  local-data: \"$line\""
    done
  done <"$work/queries"
  printf 'remote-control:\n  control-enable: no\n'
} >"$work/unbound.conf"
n=$(grep -c local-data "$work/unbound.conf")
[ "$n" -ge 8 ] || { echo "the mock answered only $n records:" >&2; cat "$work/unbound.conf" >&2; exit 1; }
unbound -d -c "$work/unbound.conf" >"$work/unbound.out" 2>&1 &
pids+=($!)
sleep 1
kill -0 "${pids[1]}" 2>/dev/null || { echo "unbound did not start:" >&2; tail -5 "$work/unbound.out" >&2; exit 1; }
perf() { dnsperf -s "$1" -p "$2" -d "$work/queries" -l "$SECS" -c 1 -T 1 -q 100 2>&1; }
echo "mock (uclab serve, dns-int $DI:$DIP):"
mock=$(perf "$DI" "$DIP"); echo "$mock" | grep -E "Queries (completed|lost)|Queries per second" | sed 's/^/  /'
echo "unbound (127.0.0.1:$UP, one thread):"
unb=$(perf 127.0.0.1 "$UP"); echo "$unb" | grep -E "Queries (completed|lost)|Queries per second" | sed 's/^/  /'
python3 - "$mock" "$unb" <<'PY'
import re, sys
def qps(t):
    return float(re.search(r"Queries per second:\s+([\d.]+)", t).group(1))
def lost(t):
    return int(re.search(r"Queries lost:\s+(\d+)", t).group(1))
m, u = sys.argv[1], sys.argv[2]
r = qps(m) / max(qps(u), 1e-9)
print(f"DNS QPS: mock {qps(m):.0f} (lost {lost(m)}), unbound {qps(u):.0f} (lost {lost(u)}), ratio mock/unbound {r:.2f}")
PY
