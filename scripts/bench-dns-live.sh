#!/usr/bin/env bash
# Issue 19's live DNS bench: the same load generator (Debian's dnsperf, one client thread,
# 100 queries in flight) against `uclab serve`'s internal DNS (dns-int of the built-in
# topology) and against a real unbound (Debian's, on loopback, one thread) serving the very
# answers the mock gives (read from it with dig), side by side in one run.
# Usage: [ROUNDS=3] scripts/bench-dns-live.sh [SECONDS]  (seconds per round and server)
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
# ROUNDS rounds, the two servers taking turns, so a neighbour that slows the machine for a
# while slows both; each server's CPU time is read around its turn. The figures are the
# medians, and the cost of a query in the server's own CPU time is printed beside the rate.
ROUNDS=${ROUNDS:-3}
SP=${pids[0]}; UBP=${pids[1]}
for r in $(seq "$ROUNDS"); do
  for who in mock unbound; do
    if [ "$who" = mock ]; then pid=$SP; host=$DI; port=$DIP; else pid=$UBP; host=127.0.0.1; port=$UP; fi
    c0=$(python3 scripts/lib/cpu.py "$pid")
    out=$(perf "$host" "$port")
    c1=$(python3 scripts/lib/cpu.py "$pid")
    q=$(echo "$out" | sed -n 's/.*Queries per second:[[:space:]]*\([0-9.]*\).*/\1/p')
    done_=$(echo "$out" | sed -n 's/.*Queries completed:[[:space:]]*\([0-9]*\).*/\1/p')
    lost=$(echo "$out" | sed -n 's/.*Queries lost:[[:space:]]*\([0-9]*\).*/\1/p')
    [ -n "$q" ] && [ -n "$lost" ] || { echo "dnsperf against $who printed no figures:" >&2; echo "$out" >&2; exit 1; }
    echo "round $r $who: $q QPS, $done_ completed, $lost lost, server CPU $(python3 -c "print(f'{$c1 - $c0:.2f}')") s"
    echo "$who $q $done_ $c0 $c1" >>"$work/rounds"
    echo "$lost" >>"$work/lost-$who"
  done
done
read -r mq mu < <(python3 scripts/lib/cpu.py rounds "$work/rounds" mock)
read -r uq uu < <(python3 scripts/lib/cpu.py rounds "$work/rounds" unbound)
ml=$(( $(paste -sd+ "$work/lost-mock") )); ul=$(( $(paste -sd+ "$work/lost-unbound") ))
python3 - "$mq" "$mu" "$ml" "$uq" "$uu" "$ul" <<'PY'
import sys
mq, mu, ml, uq, uu, ul = sys.argv[1:]
mq, mu, uq, uu = float(mq), float(mu), float(uq), float(uu)
print(f"DNS server CPU per query: mock {mu:.1f} us, unbound {uu:.1f} us, ratio unbound/mock {uu / max(mu, 1e-9):.2f}")
print(f"DNS QPS: mock {mq:.0f} (lost {ml}), unbound {uq:.0f} (lost {ul}), ratio mock/unbound {mq / max(uq, 1e-9):.2f}")
PY
