#!/usr/bin/env bash
# Installs what uclab's tests need on a fresh Debian machine: tshark, dig, curl, xmllint and
# unbound (a real DNS server the live checks start on loopback). cargo test is used when
# cargo-nextest is missing. Idempotent.
set -euo pipefail

need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v xmllint >/dev/null 2>&1 || need+=(libxml2-utils)
command -v unbound >/dev/null 2>&1 || need+=(unbound)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for t in tshark dig curl xmllint python3 unbound; do
  command -v "$t" >/dev/null || { echo "setup: $t still missing" >&2; exit 1; }
done
echo "setup: ok ($(tshark --version 2>/dev/null | head -1); $(dig -v 2>&1 | head -1))"
