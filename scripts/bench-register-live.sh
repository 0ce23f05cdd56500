#!/usr/bin/env bash
# Issue 5's live REGISTER bench: the same load generator (cargo xtask register-load: 64
# REGISTERs in flight over UDP, users u00001…uN) against `uclab serve`'s CUCM and against a
# real Kamailio (Debian's, on loopback, one UDP worker, a plain registrar), side by side; then
# the same with SIPp (Debian's sip-tester, 256 in flight) as a second, independent generator
# (issue 19).
# Usage: [ROUNDS=3] scripts/bench-register-live.sh [USERS] [SECONDS]  (seconds per run)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}; SECS=${2:-10}
for t in kamailio sipp; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done
cargo build --release --quiet -p uclab -p xtask
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# The mock's cluster with N users (a population: user ids are their lines). Like the
# Kamailio below, a plain registrar: the built-in topology's digest authentication (issue 13)
# is off for the bench, so both servers do the same work per REGISTER.
cat >"$work/users.toml" <<TOML
name = "register-bench"
summary = "N users for the live REGISTER bench"
[[node]]
name = "cucm1"
kind = "cucm"
zone = "inside"
ip = "10.1.0.11"
cluster = "cluster1"
imp_servers = ["imp1.example.com", "imp2.example.com"]
srst = "10.1.0.40"
sip_digest = false
[[population]]
prefix = "u"
count = $N
cluster = "cluster1"
zone = "inside"
dns = ["dns-int"]
subnet = "10.2.0.0/16"
TOML
target/release/uclab serve "$work/users.toml" --ports-json "$work/ports.json" >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -s "$work/ports.json" ] && break; sleep 0.1; done
S=$(python3 -c "import json,sys;print([e['addr'] for e in json.load(open(sys.argv[1])) if e['node']=='cucm1' and e['service']=='sip-udp'][0])" "$work/ports.json")
KP=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/kamailio.cfg" <<KAM
#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
listen=udp:127.0.0.1:$KP
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "sanity.so"
loadmodule "textops.so"
loadmodule "siputils.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 120)
request_route {
  if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
  if (!sanity_check()) { exit; }
  if (is_method("REGISTER")) { if (!save("location")) { sl_reply_error(); } exit; }
  sl_send_reply("404", "Not Found");
}
KAM
kamailio -f "$work/kamailio.cfg" -P "$work/k.pid" -Y "$work" -w "$work" -DD -E >"$work/kam.log" 2>&1 &
pids+=($!)
sleep 1
kill -0 "${pids[1]}" 2>/dev/null || { echo "kamailio did not start:" >&2; tail -5 "$work/kam.log" >&2; exit 1; }
# SIPp: each call is one REGISTER (users from an injection file), for SECS seconds.
cat >"$work/reg.xml" <<'XML'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[field1] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[field1]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field2]@[local_ip]:[local_port]>
      Expires: 120
      User-Agent: sipp
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
XML
python3 -c "import sys
n = int(sys.argv[1]); print('SEQUENTIAL')
for i in range(1, n + 1): print(f'u{i:05d};example.com;CSFU{i:05d}')" "$N" >"$work/users.csv"
sipp_rate() {
  rm -f "$work/screen.txt"
  # SIPp's own CPU time is measured too: a generator that fills its core is the ceiling of
  # both figures, whichever server answers.
  python3 - "$work" "$1" "$SECS" <<'PY'
import os, re, resource, subprocess, sys
work, target, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    subprocess.run(["timeout", str(secs + 20), "sipp", "-sf", f"{work}/reg.xml", "-inf", f"{work}/users.csv",
                    "-i", "127.0.0.1", "-p", "0", target, "-t", "u1", "-r", "500000", "-rp", "1000", "-l", os.environ.get("SIPP_LIMIT", "1024"),
                    "-timeout", f"{secs}s", "-nostdin", "-trace_screen", "-screen_file", f"{work}/screen.txt"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
except OSError:
    pass
r = resource.getrusage(resource.RUSAGE_CHILDREN)
t = open(f"{work}/screen.txt").read()
ok = int(re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", t).group(1))
bad = int(re.search(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", t).group(1))
print(f"{ok / secs:.0f} {ok} {bad} {100 * (r.ru_utime + r.ru_stime) / secs:.0f}")
PY
}
# ROUNDS rounds; in each, both generators against both servers, the servers taking turns, so
# a neighbour that slows the machine for a while slows both. Each server's CPU time (its
# processes and their children, from /proc) is read around its turn: the figures are the
# median rates and the server's CPU time per answered REGISTER.
ROUNDS=${ROUNDS:-3}
cpu() { python3 scripts/lib/cpu.py "$1"; }
for r in $(seq "$ROUNDS"); do
  for who in mock kamailio; do
    if [ "$who" = mock ]; then pid=${pids[0]}; to=$S; else pid=${pids[1]}; to=127.0.0.1:$KP; fi
    c0=$(cpu "$pid")
    out=$(target/release/xtask register-load "$to" example.com u "$N" "$SECS")
    c1=$(cpu "$pid")
    rate=$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("%.0f %d" % (j["register_tx_per_wall_s"], j["ok_200"]))' "$out")
    echo "round $r own generator, $who: $out, server CPU $(python3 -c "print(f'{$c1 - $c0:.2f}')") s"
    echo "own-$who $rate $c0 $c1" >>"$work/rounds"
    c0=$(cpu "$pid")
    read -r rate ok bad gen < <(sipp_rate "$to")
    c1=$(cpu "$pid")
    echo "round $r SIPp, $who: $ok REGISTERs answered 200, $bad failed, SIPp at $gen% of a core, server CPU $(python3 -c "print(f'{$c1 - $c0:.2f}')") s"
    echo "sipp-$who $rate $ok $c0 $c1" >>"$work/rounds"
  done
done
for gen in own sipp; do
  read -r m mu < <(python3 scripts/lib/cpu.py rounds "$work/rounds" "$gen-mock")
  read -r k ku < <(python3 scripts/lib/cpu.py rounds "$work/rounds" "$gen-kamailio")
  label="REGISTER/s:"; [ "$gen" = sipp ] && label="REGISTER/s with SIPp:"
  python3 - "$label" "$m" "$mu" "$k" "$ku" <<'PY'
import sys
label, m, mu, k, ku = sys.argv[1], *map(float, sys.argv[2:])
cpu_label = label.replace("REGISTER/s", "REGISTER server CPU").rstrip(":")
print(f"{cpu_label}: mock {mu:.1f} us, kamailio {ku:.1f} us per REGISTER, ratio kamailio/mock {ku / max(mu, 1e-9):.2f}")
print(f"{label} mock {m:.0f}, kamailio {k:.0f}, ratio mock/kamailio {m / max(k, 1e-9):.2f}")
PY
done
