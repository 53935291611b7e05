#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need when it is missing:
# nginx, lighttpd and apache2 (apt), a Python venv with Flask and Django (pip), cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

tools/install-test-deps.sh
tools/make-test-venv.sh
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --doc
# A short bounded fuzz run of every protocol decoder (installs cargo-fuzz when missing); its
# libFuzzer output goes to target/fuzz.log, a summary line here.
protocol/fuzz/run.sh "${FUZZ_SECONDS:-10}" > target/fuzz.log 2>&1 || { tail -50 target/fuzz.log; exit 1; }
tail -1 target/fuzz.log
cargo nextest run --workspace --no-fail-fast
