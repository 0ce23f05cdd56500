#!/usr/bin/env bash
# Installs what uclab's tests need on a fresh Debian machine: tshark and dig for the live
# checks; cargo-nextest if it is missing (cargo test is used otherwise). Idempotent.
set -euo pipefail

need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v tshark >/dev/null && command -v dig >/dev/null || { echo "setup: tshark/dig still missing" >&2; exit 1; }
echo "setup: ok ($(tshark --version 2>/dev/null | head -1); $(dig -v 2>&1 | head -1))"
