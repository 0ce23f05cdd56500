#!/usr/bin/env bash
# The test command (README): formatting, lints, every unit/integration/scenario test, then the
# live checks against real tools (tshark, dig). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "== live checks"
cargo build --locked --quiet --bin uclab
bash tests/live/run.sh target/debug/uclab
