#!/usr/bin/env bash
# Installs what uclab's tests need on a fresh Debian machine: tshark, dig, curl, xmllint,
# unbound (a real DNS server the live checks start on loopback), prosody (a real XMPP server),
# slixmpp (real XMPP clients), sipsak (a real SIP UA), kamailio (a real SIP registrar) and SIPp
# (sip-tester, a SIP load generator) and Chromium (headless, for ladder.html). cargo test is used when
# cargo-nextest is missing. Idempotent.
set -euo pipefail

need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v curl >/dev/null 2>&1 || need+=(curl)
# script(1) gives the CLI tests a terminal (progress lines show only on one).
command -v script >/dev/null 2>&1 || need+=(bsdutils)
command -v xmllint >/dev/null 2>&1 || need+=(libxml2-utils)
command -v unbound >/dev/null 2>&1 || need+=(unbound)
# A real XMPP server (the client core signs in to it) and real XMPP clients (slixmpp, for
# Debian's python3) that sign in to uclab's IM&P mock.
command -v prosody >/dev/null 2>&1 || need+=(prosody)
/usr/bin/python3 -c 'import slixmpp' >/dev/null 2>&1 || need+=(python3-slixmpp)
# A real SIP user agent (sipsak registers to the CUCM mock) and a real SIP registrar
# (Kamailio, which the client core registers to).
command -v sipsak >/dev/null 2>&1 || need+=(sipsak)
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
# SIPp, a second REGISTER load generator for the live bench (issue 19).
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
# A DNS load generator (the live checks flood serve's DNS and bound its memory, issue 13), and
# the tools that run the live checks in a network namespace with only loopback.
command -v dnsperf >/dev/null 2>&1 || need+=(dnsperf)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# A real browser: the live checks open a run's ladder.html in headless Chromium (issue 20).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for t in tshark dig curl xmllint python3 unbound prosody prosodyctl sipsak kamailio sipp dnsperf ip unshare chromium; do
  command -v "$t" >/dev/null || { echo "setup: $t still missing" >&2; exit 1; }
done
/usr/bin/python3 -c 'import slixmpp' 2>/dev/null || { echo "setup: slixmpp still missing" >&2; exit 1; }
# Debian starts the packaged prosody and kamailio services on install; the tests start their
# own on loopback.
for svc in prosody kamailio; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    ${sudo:-} systemctl stop "$svc" || true
  fi
done
echo "setup: ok ($(tshark --version 2>/dev/null | head -1); $(dig -v 2>&1 | head -1))"
