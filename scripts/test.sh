#!/usr/bin/env bash
# The test command (README): formatting, lints, every unit/integration/scenario test, then the
# live checks against real tools (tshark, dig). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# Each step says when it starts, in seconds since the start (CI is to stay under 20 minutes).
step() { echo "== $1 (at ${SECONDS} s)"; }

step "fmt"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
step "heavy scenarios (release)"
# Load scenarios (`heavy = true`, e.g. the CAP1 presence storm with 3,000 clients) take many
# minutes in a debug build, where the step above lists them as ignored; here they run in
# release with the same checks (pass, digest snapshot, stepwise replay, second seed, capture),
# their runs side by side on both cores.
cargo test --release --locked -p uclab --test scenarios heavy_ -- --include-ignored
step "live checks"
cargo build --locked --quiet --bin uclab
bash tests/live/run.sh target/debug/uclab
echo "== done in ${SECONDS} s"
